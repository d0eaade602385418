/*
 * hardexec (the command): start hardexec's Python isolated, with the environment untouched.
 *
 * hardexec runs as root, and its environment is the program's: the program's PYTHONPATH must
 * not run a sitecustomize.py inside hardexec, so Python starts with -I. pip writes the
 * interpreter's path into the first line of the hardexec-main script at install, but drops any
 * option there; this front reads that line and execs "PYTHON -I hardexec-main ARGS...".
 * Unlike a shell script, it passes the environment on byte for byte (a shell drops names that
 * are not identifiers, entries without "=", repeated names, and sets PWD), and it looks
 * nothing up on PATH: hardexec-main is the one beside this program's real file
 * (/proc/self/exe, links resolved). Where no compiler was found at install, bin/hardexec, a
 * shell script doing the same, is installed instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "hardexec: %s %s: %s\n", what, path, strerror(errno));
    return 125; /* hardexec itself failed */
}

int main(int argc, char **argv, char **envp)
{
    static char self[PATH_MAX], script[PATH_MAX], line[PATH_MAX + 3];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return fail("cannot find itself through", "/proc/self/exe");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash || snprintf(script, sizeof script, "%.*s/hardexec-main", (int)(slash - self),
                           self) >= (int)sizeof script) {
        errno = ENAMETOOLONG;
        return fail("cannot name the script beside", self);
    }

    int fd = open(script, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("cannot open", script);
    ssize_t got = read(fd, line, sizeof line - 1);
    close(fd);
    if (got < 0)
        return fail("cannot read", script);
    line[got] = '\0';
    char *end = strchr(line, '\n');
    if (got < 3 || line[0] != '#' || line[1] != '!' || !end) {
        errno = ENOEXEC;
        return fail("no interpreter line in", script);
    }
    *end = '\0';
    char *interpreter = line + 2;

    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args)
        return fail("cannot start", interpreter);
    args[0] = interpreter;
    args[1] = "-I";
    args[2] = script;
    for (int i = 1; i < argc; i++)
        args[i + 2] = argv[i];
    execve(interpreter, args, envp);
    return fail("cannot start", interpreter);
}
