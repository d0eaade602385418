# A web server that may bind port 80 and nothing else, and can never gain privileges.
# This one listens on loopback, answers one request (or gives up after 10 s) and exits.
set -e
hardexec run --drop-all-caps --keep-cap NET_BIND_SERVICE --no-new-privs -- python3 -c '
import http.server
server = http.server.HTTPServer(("127.0.0.1", 80), http.server.SimpleHTTPRequestHandler)
server.timeout = 10
server.handle_request()
' &
python3 -c '
import time, urllib.request
for attempt in range(100):  # the server needs a moment to start listening
    try:
        with urllib.request.urlopen("http://127.0.0.1:80/") as reply:
            print("client: HTTP", reply.status)
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("client: no answer from 127.0.0.1:80")
'
wait $!
