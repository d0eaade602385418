/*
 * hardexec-stage: apply a least-privilege plan to this process, then execve() the program.
 *
 * The Python parent spawns this program instead of running Python between fork() and exec():
 * a fresh process image may allocate, format and make syscalls freely, and the parent keeps
 * subprocess's vfork() fast path. The plan arrives as options (see hardexec/plan.py):
 *
 *   hardexec-stage [--report-fd=N] [--uid=N] [--gid=N] [--groups=G,G | --clear-groups]
 *                  [--drop-caps=KEEPHEX] [--strict] [--nnp] [--exec=PATH] -- PROGRAM [ARG...]
 *
 * Steps run in one fixed order, the only one the kernel makes correct (capabilities(7)):
 *   1. setgroups, setresgid            needs CAP_SETGID, so before any capability is dropped
 *   2. drop non-kept caps from the bounding set
 *                                      needs CAP_SETPCAP; without it root regains every cap
 *                                      at execve (the reference's defect)
 *   3. PR_SET_KEEPCAPS, setresuid      keeps the permitted set across the uid change
 *   4. capset E = P = I = keep & P     I must be *set*, not masked: ambient needs P and I
 *   5. clear ambient, raise each kept  how a non-root program receives the kept caps at execve
 *   6. PR_SET_NO_NEW_PRIVS
 *   7. execve (PATH searched like CPython's subprocess)
 *
 * Failure semantics: steps 2-5 are best-effort unless --strict: a failure is reported as a
 * warning and the stage goes on. Identity changes, no_new_privs and exec always abort.
 * Reports go to the report fd (close-on-exec, so EOF there means exec succeeded) as lines
 * "W|F <step> <errno> <cap|->"; without one, as text on stderr, exiting 125/126/127 like env(1).
 *
 * twin.py is the pure-Python twin of this file; the two must behave identically.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define MAX_CAP 63
#define EXIT_STAGE 125   /* hardexec itself failed */
#define EXIT_NOEXEC 126  /* program found but could not be executed */
#define EXIT_NOENT 127   /* program not found */

extern char **environ;

struct plan {
    int report_fd;
    int has_uid, has_gid, set_groups, drop_caps, strict, nnp;
    uid_t uid;
    gid_t gid;
    size_t ngroups;
    gid_t *groups;
    uint64_t keep;
    const char *exec_path;
    char **argv;
};

static int report_fd = -1;

/* One record on the report fd, or one line on stderr when there is none. */
static void report(char kind, const char *step, int err, int cap)
{
    char line[160];
    int n;
    if (report_fd >= 0) {
        if (cap >= 0)
            n = snprintf(line, sizeof line, "%c %s %d %d\n", kind, step, err, cap);
        else
            n = snprintf(line, sizeof line, "%c %s %d -\n", kind, step, err);
    } else {
        n = snprintf(line, sizeof line, "hardexec-stage: %s%s failed: [Errno %d] %s", kind == 'W' ? "warning: " : "",
                     step, err, strerror(err));
        if (cap >= 0 && n > 0 && (size_t)n < sizeof line)
            n += snprintf(line + n, sizeof line - n, " (capability %d)", cap);
        if (n > 0 && (size_t)n < sizeof line - 1)
            line[n++] = '\n';
    }
    if (n > 0 && (size_t)n < sizeof line) {
        int fd = report_fd >= 0 ? report_fd : STDERR_FILENO;
        ssize_t done = 0;
        while (done < n) {
            ssize_t w = write(fd, line + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            done += w;
        }
    }
}

static _Noreturn void fail(const char *step, int err, int cap)
{
    report('F', step, err, cap);
    if (strcmp(step, "exec") != 0)
        _exit(EXIT_STAGE);
    _exit(err == ENOENT || err == ENOTDIR ? EXIT_NOENT : EXIT_NOEXEC);
}

/* A capability step failed: abort under --strict, else warn and go on. */
static void cap_failed(const struct plan *p, const char *step, int err, int cap)
{
    if (p->strict)
        fail(step, err, cap);
    report('W', step, err, cap);
}

/* Digits only: strtoull alone would also take a sign, blanks and a "0x" prefix. */
static int parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
    char *end;
    if (*s == '\0')
        return -1;
    for (const char *c = s; *c; c++)
        if (!(base == 16 ? isxdigit((unsigned char)*c) : isdigit((unsigned char)*c)))
            return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_id(const char *s, uint32_t *out)
{
    uint64_t v;
    /* (uid_t)-1 means "unchanged" to setresuid, so it is never a valid identity here. */
    if (parse_u64(s, 10, 0xFFFFFFFEu, &v) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_groups(const char *s, struct plan *p)
{
    size_t n = 1;
    for (const char *c = s; *c; c++)
        n += *c == ',';
    p->groups = calloc(n, sizeof *p->groups);
    if (!p->groups)
        return -1;
    char *copy = strdup(s), *save = NULL;
    if (!copy)
        return -1;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint32_t gid;
        if (parse_id(tok, &gid) < 0) {
            free(copy);
            return -1;
        }
        p->groups[p->ngroups++] = gid;
    }
    free(copy);
    return p->ngroups == n ? 0 : -1; /* rejects empty items such as "1,,2" */
}

static int option(const char *arg, const char *name, const char **value)
{
    size_t len = strlen(name);
    if (strncmp(arg, name, len) != 0 || arg[len] != '=')
        return 0;
    *value = arg + len + 1;
    return 1;
}

static void parse(int argc, char **argv, struct plan *p)
{
    int i;
    const char *v;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t n;
        if (strcmp(a, "--") == 0)
            break;
        if (option(a, "--report-fd", &v)) {
            if (parse_u64(v, 10, 0x7fffffff, &n) < 0)
                goto bad;
            p->report_fd = (int)n;
            /* Close-on-exec: the program must not inherit it, and EOF signals a good exec. */
            if (fcntl(p->report_fd, F_SETFD, FD_CLOEXEC) < 0) {
                p->report_fd = -1;
                fail("report_fd", errno, -1);
            }
            report_fd = p->report_fd;
        } else if (option(a, "--uid", &v)) {
            if (parse_id(v, &p->uid) < 0)
                goto bad;
            p->has_uid = 1;
        } else if (option(a, "--gid", &v)) {
            if (parse_id(v, &p->gid) < 0)
                goto bad;
            p->has_gid = 1;
        } else if (option(a, "--groups", &v)) {
            if (parse_groups(v, p) < 0)
                goto bad;
            p->set_groups = 1;
        } else if (strcmp(a, "--clear-groups") == 0) {
            p->set_groups = 1;
            p->ngroups = 0;
        } else if (option(a, "--drop-caps", &v)) {
            if (strlen(v) > 16 || parse_u64(v, 16, UINT64_MAX, &p->keep) < 0)
                goto bad;
            p->drop_caps = 1;
        } else if (strcmp(a, "--strict") == 0) {
            p->strict = 1;
        } else if (strcmp(a, "--nnp") == 0) {
            p->nnp = 1;
        } else if (option(a, "--exec", &v)) {
            p->exec_path = v;
        } else {
            goto bad;
        }
    }
    if (i >= argc - 1) /* no "--", or nothing after it */
        goto bad;
    p->argv = argv + i + 1;
    return;
bad:
    fail("arguments", EINVAL, -1);
}

/* Keep only the kept caps in the bounding set, 0..cap_last_cap as the kernel reports it. */
static void drop_bounding(const struct plan *p)
{
    int first_err = 0, first_cap = -1;
    for (int cap = 0; cap <= MAX_CAP; cap++) {
        int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in < 0)
            break; /* EINVAL: past the kernel's cap_last_cap */
        if (!in || (p->keep >> cap & 1))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && !first_err) {
            first_err = errno;
            first_cap = cap;
            if (p->strict)
                break;
        }
    }
    /* The same cause (no CAP_SETPCAP) fails every cap: one warning, naming the first. */
    if (first_err)
        cap_failed(p, "bounding_set", first_err, first_cap);
}

/* E = P = I = keep & P. Returns the caps actually kept (for the ambient raise). */
static uint64_t set_caps(const struct plan *p)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &hdr, data) < 0) {
        cap_failed(p, "capget", errno, -1);
        return 0;
    }
    uint64_t permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
    uint64_t missing = p->keep & ~permitted;
    for (int cap = 0; cap <= MAX_CAP; cap++)
        if (missing >> cap & 1)
            cap_failed(p, "keep_caps", EPERM, cap);
    uint64_t want = p->keep & permitted;
    for (int w = 0; w < 2; w++) {
        uint32_t bits = (uint32_t)(want >> (32 * w));
        data[w].effective = data[w].permitted = data[w].inheritable = bits;
    }
    if (syscall(SYS_capset, &hdr, data) < 0) {
        cap_failed(p, "capset", errno, -1);
        return 0;
    }
    return want;
}

static void set_ambient(const struct plan *p, uint64_t kept)
{
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        cap_failed(p, "ambient_clear", errno, -1);
    for (int cap = 0; cap <= MAX_CAP; cap++)
        if ((kept >> cap & 1) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            cap_failed(p, "ambient_raise", errno, cap);
}

/* execve, searching PATH from the program's own environment the way CPython's subprocess does:
 * an empty entry means the current directory; the first error other than ENOENT/ENOTDIR wins. */
static _Noreturn void exec_program(const struct plan *p)
{
    const char *file = p->exec_path ? p->exec_path : p->argv[0];
    if (p->exec_path || strchr(file, '/')) {
        execve(file, p->argv, environ);
        fail("exec", errno, -1);
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin"; /* os.defpath */
    size_t flen = strlen(file);
    char *buf = malloc(strlen(path) + flen + 2);
    if (!buf)
        fail("exec", ENOMEM, -1);
    int saved = 0, last = ENOENT;
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        memcpy(buf, dir, dlen);
        if (dlen)
            buf[dlen++] = '/';
        memcpy(buf + dlen, file, flen + 1);
        execve(buf, p->argv, environ);
        last = errno;
        if (last != ENOENT && last != ENOTDIR && !saved)
            saved = last;
        if (*end == '\0')
            break;
        dir = end;
    }
    fail("exec", saved ? saved : last, -1);
}

int main(int argc, char **argv)
{
    struct plan p = {.report_fd = -1};
    parse(argc, argv, &p);

    if (p.set_groups && setgroups(p.ngroups, p.groups) < 0)
        fail("setgroups", errno, -1);
    if (p.has_gid && setresgid(p.gid, p.gid, p.gid) < 0)
        fail("setresgid", errno, -1);
    if (p.drop_caps)
        drop_bounding(&p);
    if (p.has_uid) {
        if (p.drop_caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
            cap_failed(&p, "keepcaps", errno, -1);
        if (setresuid(p.uid, p.uid, p.uid) < 0)
            fail("setresuid", errno, -1);
    }
    if (p.drop_caps)
        set_ambient(&p, set_caps(&p));
    if (p.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail("no_new_privs", errno, -1);
    exec_program(&p);
}
