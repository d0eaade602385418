/*
 * hardexec-stage: apply a least-privilege plan to this process, then execve() the program.
 *
 * The Python parent spawns this program instead of running Python between fork() and exec():
 * a fresh process image may do anything, and the parent keeps subprocess's vfork() fast path.
 * The plan arrives as options (see hardexec/plan.py):
 *
 *   hardexec-stage [--report-fd=N] [--env-fd=N] [--cgroup-fd=N [--cgroup-strict]]
 *                  [--rlimit=RES:VALUE...] [--umask=OCTAL] [--unshare=NS,NS...]
 *                  [--hostname=NAME] [--landlock-fd=N] [--uid=N] [--gid=N]
 *                  [--groups-fd=N | --clear-groups] [--drop-caps=KEEPHEX] [--strict]
 *                  [--lock-securebits] [--nnp] [--ignore-signals=N,N] [--die-with-parent=PID]
 *                  [--seccomp-fd=N [--seccomp-notify-fd=N]] [--trace-exec[=PID]] [--exec=PATH]
 *                  -- PROGRAM [ARG...]
 *
 * The stage is started with an empty environment: the program's arrives in the --env-fd memfd
 * ("NAME=value\0" entries), so nothing a loader or interpreter reads from it (LD_PRELOAD,
 * LD_AUDIT, PYTHON*) acts in this privileged process. Without --env-fd the program gets the
 * stage's own environment. --groups-fd is a memfd of native 32-bit gids (no argv limit);
 * --landlock-fd and --seccomp-fd are memfds of rules and of a BPF program (see plan.py).
 *
 * Steps run in one fixed order, the only one the kernel makes correct (capabilities(7)); each
 * is placed by the privilege it needs and by what it would stop the later steps doing:
 *   0. read the memfds (environment, groups, Landlock rules, seccomp program)
 *  0b. --trace-exec: PTRACE_TRACEME, then stop for the parent (see trace_exec below), so the
 *      parent can check the program's credentials at its exec, before its first instruction.
 *      First, with the launcher's own credentials: the kernel records them as the tracer's
 *      (ptracer_cred), and with CAP_SYS_PTRACE among them it treats the exec as it would
 *      untraced, so what the parent checks is what the program would have had anyway
 *   1. join the cgroup                 write "0" to its cgroup.procs (opened by the parent), so
 *                                      the program and all it starts are inside from the start
 *   2. rlimits: soft = hard = min(VALUE, inherited hard); lowering needs no privilege
 *   3. umask
 *   4. namespaces (unshare)            needs CAP_SYS_ADMIN, so while every capability is still
 *                                      here; without it, a user namespace first, mapping our own
 *                                      uid and gid (user_namespaces(7)); then lo up in a new
 *                                      network namespace (CAP_NET_ADMIN there), the host name
 *   5. Landlock ruleset: open each rule's path (O_PATH) with the launcher's view of the files
 *   6. pid namespace: CLONE_NEWPID applies to children only, so fork the namespace's init,
 *      then the program's process; this process stays outside as the relay (it forwards
 *      signals, and when the program ends, ends the namespace and exits with its status).
 *      Steps 7-17 run in the program's process.
 *   7. setgroups, setresgid            needs CAP_SETGID, so before any capability is dropped
 *   8. drop non-kept caps from the bounding set
 *                                      needs CAP_SETPCAP; without it root regains every cap at
 *                                      execve (solti-exec's defect), so for a uid-0 program
 *                                      without no_new_privs a failure here always aborts
 *   9. PR_SET_KEEPCAPS, setresuid      keeps the permitted set across the uid change
 *  10. lock securebits (NOROOT)        needs CAP_SETPCAP in the effective set: before capset
 *  11. capset E = P = I = keep & P     I must be *set*, not masked: ambient needs P and I;
 *      clear ambient, raise each kept  how a non-root program receives the kept caps at execve
 *  12. PR_SET_NO_NEW_PRIVS
 *  13. ignore the listed signals       what subprocess's restore_signals left ignored
 *  14. PR_SET_PDEATHSIG(SIGKILL), then check getppid() against --die-with-parent: after every
 *      credential change, which clears it; the check closes the race with a parent that died
 *      before it was set
 *  15. landlock_restrict_self          needs no_new_privs or CAP_SYS_ADMIN (the parent implies
 *                                      no_new_privs when the program will not hold the latter);
 *                                      late, because the steps above still read /proc
 *  16. seccomp filter                  the same rule; last, so it judges only the program (and
 *                                      the two calls left: the listener's sendmsg, execve)
 *  17. execve (PATH searched like CPython's subprocess, for --exec too)
 *
 * Failure semantics: the capability steps 8-11 are best-effort unless --strict, the cgroup
 * join unless --cgroup-strict: a failure is reported as a warning and the stage goes on.
 * Everything else always aborts (confinement fails closed; best effort is the parent's choice
 * of what to put in the plan).
 * Reports go to the report fd (close-on-exec, so EOF there means exec succeeded) as lines
 * "W|F <step> <errno> <cap|resource|signal|->"; without one, as one line on stderr
 * ("hardexec: <step> failed: ..." or "hardexec: <program>: <error>"), exiting 125/126/127 like
 * env(1).
 *
 * Two builds of this file, chosen by setup.py:
 *   - freestanding (HX_FREESTANDING, x86_64/aarch64): raw syscalls and our own _start, no C
 *     library. The stage runs at every spawn, and a static glibc's start-up alone (CPU feature
 *     probing, IRELATIVE relocations, TLS) costs more than all the steps below together.
 *   - C library: the same steps through libc, for every other platform.
 * twin.py is the pure-Python twin of this file; all three must behave identically.
 */

/* ---- platform layer: each call returns its result, or -errno ----------------------------- */

#if defined(HX_FREESTANDING)

#include <asm/unistd.h>
#include <linux/errno.h>

#if defined(__x86_64__)
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
/* The kernel enters with argc at (%rsp); align the stack as the ABI wants before the call. */
__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call hx_start\n  hlt\n");
#elif defined(__aarch64__)
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n"
        "  mov x29, #0\n  mov x30, #0\n  mov x0, sp\n  bl hx_start\n  brk #0\n");
#else
#error "the freestanding stage supports x86_64 and aarch64; build without HX_FREESTANDING"
#endif

#define F_SETFD 2
#define FD_CLOEXEC 1

/* The compiler may emit calls to these for struct copies and zeroing. */
void *memcpy(void *dst, const void *src, unsigned long n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, unsigned long n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

static long hx_write(int fd, const void *buf, unsigned long n)
{
    return sys6(__NR_write, fd, (long)buf, (long)n, 0, 0, 0);
}
static long hx_cloexec(int fd) { return sys6(__NR_fcntl, fd, F_SETFD, FD_CLOEXEC, 0, 0, 0); }
static long hx_close(int fd) { return sys6(__NR_close, fd, 0, 0, 0, 0, 0); }
static long hx_prlimit(int resource, const void *new_limit, void *old_limit)
{
    return sys6(__NR_prlimit64, 0, resource, (long)new_limit, (long)old_limit, 0, 0);
}
static long hx_setgroups(unsigned long n, const unsigned int *groups)
{
    return sys6(__NR_setgroups, (long)n, (long)groups, 0, 0, 0, 0);
}
static long hx_setresgid(unsigned int g) { return sys6(__NR_setresgid, g, g, g, 0, 0, 0); }
static long hx_setresuid(unsigned int u) { return sys6(__NR_setresuid, u, u, u, 0, 0, 0); }
static long hx_prctl(int option, unsigned long arg2, unsigned long arg3)
{
    return sys6(__NR_prctl, option, (long)arg2, (long)arg3, 0, 0, 0);
}
static long hx_capget(void *header, void *data)
{
    return sys6(__NR_capget, (long)header, (long)data, 0, 0, 0, 0);
}
static long hx_capset(void *header, const void *data)
{
    return sys6(__NR_capset, (long)header, (long)data, 0, 0, 0, 0);
}
static long hx_execve(const char *path, char **argv, char **envp)
{
    return sys6(__NR_execve, (long)path, (long)argv, (long)envp, 0, 0, 0);
}
static __attribute__((noreturn)) void hx_exit(int code)
{
    for (;;)
        sys6(__NR_exit_group, code, 0, 0, 0, 0, 0);
}
static long hx_size(int fd) { return sys6(__NR_lseek, fd, 0, 2 /* SEEK_END */, 0, 0, 0); }
static long hx_map(int fd, unsigned long n) /* a private read-only view of a memfd, or -errno */
{
    return sys6(__NR_mmap, 0, (long)n, 1 /* PROT_READ */, 2 /* MAP_PRIVATE */, fd, 0);
}
static long hx_alloc(unsigned long n) /* zeroed memory, or -errno */
{
    return sys6(__NR_mmap, 0, (long)n, 3 /* PROT_READ|WRITE */, 0x22 /* PRIVATE|ANONYMOUS */, -1,
                0);
}
static long hx_getppid(void) { return sys6(__NR_getppid, 0, 0, 0, 0, 0, 0); }
static long hx_getresuid(unsigned int ids[3])
{
    return sys6(__NR_getresuid, (long)&ids[0], (long)&ids[1], (long)&ids[2], 0, 0, 0);
}
struct hx_sigaction {
    unsigned long handler, flags, restorer, mask;
};
static long hx_ignore_signal(int sig)
{
    struct hx_sigaction act = {1 /* SIG_IGN */, 0, 0, 0};
    return sys6(__NR_rt_sigaction, sig, (long)&act, 0, sizeof act.mask, 0, 0);
}

static long hx_sys(long n, long a, long b, long c, long d, long e)
{
    return sys6(n, a, b, c, d, e, 0);
}
#define NR_UNSHARE __NR_unshare
#define NR_OPENAT __NR_openat
#define NR_STATX __NR_statx
#define NR_PIPE2 __NR_pipe2
#define NR_CLOSE_RANGE __NR_close_range
#define NR_RT_SIGPROCMASK __NR_rt_sigprocmask
#define NR_RT_SIGACTION __NR_rt_sigaction
#define NR_SIGNALFD4 __NR_signalfd4
#define NR_READ __NR_read
#define NR_WAIT4 __NR_wait4
#define NR_KILL __NR_kill
#define NR_GETPID __NR_getpid
#define NR_PPOLL __NR_ppoll
#define NR_SOCKET __NR_socket
#define NR_IOCTL __NR_ioctl
#define NR_SETHOSTNAME __NR_sethostname
#define NR_SECCOMP __NR_seccomp
#define NR_SENDMSG __NR_sendmsg
#define NR_UMASK __NR_umask
#define NR_GETRESGID __NR_getresgid
#define NR_CLONE __NR_clone
#define NR_PTRACE __NR_ptrace
#define HX_SIGSTOP 19 /* x86_64 and aarch64 */
#define NR_LANDLOCK_CREATE 444
#define NR_LANDLOCK_ADD 445
#define NR_LANDLOCK_RESTRICT 446

static int stage_main(int argc, char **argv, char **envp);

__attribute__((used, noreturn)) void hx_start(long *sp)
{
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    hx_exit(stage_main(argc, argv, argv + argc + 1));
}

#else /* the C library build */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static long ret(long r) { return r < 0 ? -errno : r; }
static long hx_write(int fd, const void *buf, unsigned long n) { return ret(write(fd, buf, n)); }
static long hx_cloexec(int fd) { return ret(fcntl(fd, F_SETFD, FD_CLOEXEC)); }
static long hx_close(int fd) { return ret(close(fd)); }
static long hx_prlimit(int resource, const void *new_limit, void *old_limit)
{
    return ret(syscall(SYS_prlimit64, 0, resource, new_limit, old_limit));
}
static long hx_setgroups(unsigned long n, const unsigned int *groups)
{
    return ret(setgroups(n, (const gid_t *)groups));
}
static long hx_setresgid(unsigned int g) { return ret(setresgid(g, g, g)); }
static long hx_setresuid(unsigned int u) { return ret(setresuid(u, u, u)); }
static long hx_prctl(int option, unsigned long arg2, unsigned long arg3)
{
    return ret(prctl(option, arg2, arg3, 0UL, 0UL));
}
static long hx_capget(void *header, void *data) { return ret(syscall(SYS_capget, header, data)); }
static long hx_capset(void *header, const void *data)
{
    return ret(syscall(SYS_capset, header, data));
}
static long hx_execve(const char *path, char **argv, char **envp)
{
    return ret(execve(path, argv, envp));
}
static __attribute__((noreturn)) void hx_exit(int code) { _exit(code); }
static long hx_size(int fd) { return ret(lseek(fd, 0, SEEK_END)); }
static long hx_map(int fd, unsigned long n)
{
    void *p = mmap(0, n, PROT_READ, MAP_PRIVATE, fd, 0);
    return p == MAP_FAILED ? -errno : (long)p;
}
static long hx_alloc(unsigned long n)
{
    void *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? -errno : (long)p;
}
static long hx_getppid(void) { return getppid(); }
static long hx_getresuid(unsigned int ids[3]) { return ret(getresuid(&ids[0], &ids[1], &ids[2])); }
static long hx_ignore_signal(int sig) { return signal(sig, SIG_IGN) == SIG_ERR ? -errno : 0; }

static long hx_sys(long n, long a, long b, long c, long d, long e)
{
    return ret(syscall(n, a, b, c, d, e));
}
#define NR_UNSHARE SYS_unshare
#define NR_OPENAT SYS_openat
#define NR_STATX SYS_statx
#define NR_PIPE2 SYS_pipe2
#define NR_CLOSE_RANGE 436 /* the same number on every architecture */
#define NR_RT_SIGPROCMASK SYS_rt_sigprocmask
#define NR_RT_SIGACTION SYS_rt_sigaction
#define NR_SIGNALFD4 SYS_signalfd4
#define NR_READ SYS_read
#define NR_WAIT4 SYS_wait4
#define NR_KILL SYS_kill
#define NR_GETPID SYS_getpid
#define NR_PPOLL SYS_ppoll
#define NR_SOCKET SYS_socket
#define NR_IOCTL SYS_ioctl
#define NR_SETHOSTNAME SYS_sethostname
#define NR_SECCOMP SYS_seccomp
#define NR_SENDMSG SYS_sendmsg
#define NR_UMASK SYS_umask
#define NR_GETRESGID SYS_getresgid
#define NR_CLONE SYS_clone
#define NR_PTRACE SYS_ptrace
#define HX_SIGSTOP SIGSTOP /* not 19 everywhere */
#define NR_LANDLOCK_CREATE 444
#define NR_LANDLOCK_ADD 445
#define NR_LANDLOCK_RESTRICT 446

static int stage_main(int argc, char **argv, char **envp);

int main(int argc, char **argv, char **envp) { return stage_main(argc, argv, envp); }

#endif

/* ---- the stage itself: no C library below this line -------------------------------------- */

#include <linux/capability.h>
#include <linux/prctl.h>

#define MAX_CAP 63
#define MAX_GROUPS 65536   /* the kernel's NGROUPS_MAX */
#define MAX_PATH 4096      /* the kernel's PATH_MAX: longer names fail with ENAMETOOLONG */
#define MAX_RLIMITS 16     /* the kernel's RLIM_NLIMITS */
#define EXIT_STAGE 125     /* hardexec itself failed */
#define EXIT_NOEXEC 126    /* program found but could not be executed */
#define EXIT_NOENT 127     /* program not found */

typedef unsigned long long u64;

struct rlimit64 {
    u64 cur, max;
};

struct plan {
    int cgroup_fd, cgroup_strict, env_fd, groups_fd;
    int nrlimits, rlimit_resource[MAX_RLIMITS];
    u64 rlimit_value[MAX_RLIMITS];
    int has_uid, has_gid, set_groups, drop_caps, strict, nnp;
    unsigned int uid, gid;
    unsigned long ngroups;
    const unsigned int *groups;
    u64 keep;
    u64 ignore_signals; /* bit n-1: signal n */
    long parent;        /* --die-with-parent: the pid that must stay our parent, else 0 */
    int in_pid_ns;      /* the program's process, inside its new pid namespace */
    long umask;         /* --umask, or -1 */
    long unshare;       /* CLONE_NEW* flags of --unshare */
    const char *hostname;
    int landlock_fd, seccomp_fd, notify_fd, lock_securebits;
    int trace_exec;             /* --trace-exec: stopped at exec for the parent to check */
    long tracer;                /* --trace-exec=PID: the tracer, which must be our parent */
    const char *landlock;       /* the rules memfd, mapped (NUL-terminated entries) */
    long landlock_size;
    const void *filter;         /* the seccomp program, mapped */
    unsigned long filter_len;   /* in instructions */
    int ruleset_fd;
    const char *exec_path;
    char **argv;
    char **envp;
};

static int report_fd = -1;

static unsigned long str_len(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* "--name=value" → value, or 0 when arg is not that option. */
static const char *option(const char *arg, const char *name)
{
    while (*name && *arg == *name)
        arg++, name++;
    return *name == '\0' && *arg == '=' ? arg + 1 : 0;
}

/* Digits of the base only (no sign, blank or 0x), value <= max. */
static int parse_u64(const char *s, const char *end, int base, u64 max, u64 *out)
{
    u64 v = 0;
    if (s == end)
        return -1;
    for (; s < end; s++) {
        int d = *s >= '0' && *s <= '9'             ? *s - '0'
                : base == 16 && *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
                : base == 16 && *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
                                                       : -1;
        if (d < 0 || d >= base || v > (max - (u64)d) / (u64)base)
            return -1;
        v = v * (u64)base + (u64)d;
    }
    *out = v;
    return 0;
}

/* (uid_t)-1 means "unchanged" to setresuid, so it is never a valid identity here. */
static int parse_id(const char *s, const char *end, unsigned int *out)
{
    u64 v;
    if (parse_u64(s, end, 10, 0xFFFFFFFEull, &v) < 0)
        return -1;
    *out = (unsigned int)v;
    return 0;
}

/* The texts glibc and Python's os.strerror give for what these syscalls can return. */
static const char *error_text(int err)
{
    switch (err) {
    case EPERM: return "Operation not permitted";
    case ENOENT: return "No such file or directory";
    case ESRCH: return "No such process";
    case EINTR: return "Interrupted system call";
    case EIO: return "Input/output error";
    case E2BIG: return "Argument list too long";
    case ENOEXEC: return "Exec format error";
    case EBADF: return "Bad file descriptor";
    case EAGAIN: return "Resource temporarily unavailable";
    case ENOMEM: return "Cannot allocate memory";
    case EACCES: return "Permission denied";
    case EFAULT: return "Bad address";
    case EBUSY: return "Device or resource busy";
    case ENOTDIR: return "Not a directory";
    case EISDIR: return "Is a directory";
    case EINVAL: return "Invalid argument";
    case ENFILE: return "Too many open files in system";
    case EMFILE: return "Too many open files";
    case ETXTBSY: return "Text file busy";
    case ENAMETOOLONG: return "File name too long";
    case ENOSYS: return "Function not implemented";
    case ELOOP: return "Too many levels of symbolic links";
    case ELIBBAD: return "Accessing a corrupted shared library";
    case ENODEV: return "No such device";
    case ENOSPC: return "No space left on device";
    case ENOMSG: return "No message of desired type";
    case EUSERS: return "Too many users";
    case EOPNOTSUPP: return "Operation not supported";
    default: return 0;
    }
}

struct line {
    char buf[MAX_PATH + 256]; /* room for a program's name */
    unsigned long n;
};

static void put(struct line *l, const char *s)
{
    while (*s && l->n < sizeof l->buf)
        l->buf[l->n++] = *s++;
}

static void put_num(struct line *l, long v)
{
    char digits[24];
    int i = 0;
    unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
    do
        digits[i++] = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        put(l, "-");
    while (i)
        put(l, (char[]){digits[--i], 0});
}

static const char *program_name; /* for exec failures on stderr */

/* Why a step failed with EPERM: the privilege the process that started the stage lacked. */
static const char *needs(const char *step)
{
    if (str_eq(step, "setgroups") || str_eq(step, "setresgid"))
        return "the launcher lacks CAP_SETGID";
    if (str_eq(step, "setresuid"))
        return "the launcher lacks CAP_SETUID";
    if (str_eq(step, "bounding_set"))
        return "the launcher lacks CAP_SETPCAP";
    if (str_eq(step, "keep_caps"))
        return "the launcher's permitted set lacks it";
    if (str_eq(step, "unshare") || str_eq(step, "userns") || str_eq(step, "hostname"))
        return "the launcher lacks CAP_SYS_ADMIN";
    if (str_eq(step, "securebits"))
        return "the launcher lacks CAP_SETPCAP";
    return 0;
}

/* One record on the report fd, or one line on stderr when there is none. ``arg`` is the
 * capability, resource (setrlimit) or signal (ignore_signals) the record is about, or -1;
 * ``why`` is said on stderr only (the parent words its own from the record). */
static void report_why(char kind, const char *step, int err, int arg, const char *why)
{
    struct line l = {.n = 0};
    if (report_fd >= 0) {
        put(&l, kind == 'W' ? "W " : kind == 'T' ? "T " : "F ");
        put(&l, step);
        put(&l, " ");
        put_num(&l, err);
        put(&l, " ");
        if (arg >= 0)
            put_num(&l, arg);
        else
            put(&l, "-");
    } else {
        const char *text = error_text(err);
        int exec = str_eq(step, "exec");
        put(&l, kind == 'W' ? "hardexec: warning: " : "hardexec: ");
        if (exec) { /* as the shell says it: "hardexec: prog: No such file or directory" */
            put(&l, program_name);
            put(&l, ": ");
        } else {
            put(&l, step);
            put(&l, " failed: [Errno ");
            put_num(&l, err);
            put(&l, "] ");
        }
        if (text) {
            put(&l, text);
        } else {
            put(&l, "Unknown error ");
            put_num(&l, err);
        }
        if (arg >= 0) {
            put(&l, str_eq(step, "setrlimit")        ? " (resource "
                    : str_eq(step, "ignore_signals") ? " (signal "
                    : str_eq(step, "landlock_path") || str_eq(step, "landlock_rule")
                        ? " (rule "
                        : " (capability ");
            put_num(&l, arg);
            put(&l, ")");
        }
        if (!why && err == EPERM)
            why = needs(step);
        if (why) {
            put(&l, ": ");
            put(&l, why);
        }
    }
    if (l.n == sizeof l.buf) /* cut short: still one line */
        l.buf[l.n - 1] = '\n';
    else
        l.buf[l.n++] = '\n';
    int fd = report_fd >= 0 ? report_fd : 2;
    for (unsigned long done = 0; done < l.n;) {
        long w = hx_write(fd, l.buf + done, l.n - done);
        if (w == -EINTR)
            continue;
        if (w <= 0)
            break;
        done += (unsigned long)w;
    }
}

static void report(char kind, const char *step, int err, int arg)
{
    report_why(kind, step, err, arg, 0);
}

static __attribute__((noreturn)) void fail_why(const char *step, int err, int arg,
                                               const char *why)
{
    report_why('F', step, err, arg, why);
    if (!str_eq(step, "exec"))
        hx_exit(EXIT_STAGE);
    hx_exit(err == ENOENT || err == ENOTDIR ? EXIT_NOENT : EXIT_NOEXEC);
}

static __attribute__((noreturn)) void fail(const char *step, int err, int arg)
{
    fail_why(step, err, arg, 0);
}

/* A capability step failed: abort under --strict, else warn and go on. */
static void cap_failed(const struct plan *p, const char *step, int err, int cap)
{
    if (p->strict)
        fail(step, err, cap);
    report('W', step, err, cap);
}

/* "N,N,...": signal numbers 1..64, as a mask. */
static int parse_signals(const char *s, u64 *mask)
{
    const char *item = s;
    for (;;) {
        const char *end = item;
        u64 sig;
        while (*end && *end != ',')
            end++;
        if (parse_u64(item, end, 10, 64, &sig) < 0 || sig == 0)
            return -1; /* also rejects empty items such as "1,,2" */
        *mask |= 1ull << (sig - 1);
        if (!*end)
            return 0;
        item = end + 1;
    }
}

static int parse_fd(const char *v, int *fd)
{
    u64 n;
    if (parse_u64(v, v + str_len(v), 10, 0x7fffffff, &n) < 0)
        return -1;
    *fd = (int)n;
    return 0;
}

/* "RES:VALUE", RES below RLIM_NLIMITS, VALUE a figure below RLIM_INFINITY (as the policy's). */
static int parse_rlimit(const char *s, struct plan *p)
{
    const char *colon = s;
    u64 resource;
    while (*colon && *colon != ':')
        colon++;
    if (!*colon || p->nrlimits == MAX_RLIMITS ||
        parse_u64(s, colon, 10, MAX_RLIMITS - 1, &resource) < 0 ||
        parse_u64(colon + 1, colon + 1 + str_len(colon + 1), 10, 0x7fffffffffffffffull,
                  &p->rlimit_value[p->nrlimits]) < 0)
        return -1;
    p->rlimit_resource[p->nrlimits++] = (int)resource;
    return 0;
}

#define CLONE_NEWUTS_ 0x04000000
#define CLONE_NEWIPC_ 0x08000000
#define CLONE_NEWUSER_ 0x10000000
#define CLONE_NEWPID_ 0x20000000
#define CLONE_NEWNET_ 0x40000000

/* "user,net,ipc,uts,pid" in any order, each at most once, as CLONE_NEW* flags. */
static int parse_unshare(const char *s, long *flags)
{
    static const char *names[] = {"user", "net", "ipc", "uts", "pid"};
    static const long bits[] = {CLONE_NEWUSER_, CLONE_NEWNET_, CLONE_NEWIPC_, CLONE_NEWUTS_,
                                CLONE_NEWPID_};
    const char *item = s;
    for (;;) {
        const char *end = item;
        int found = -1;
        while (*end && *end != ',')
            end++;
        for (int k = 0; k < 5; k++) {
            const char *a = item, *b = names[k];
            while (a < end && *a == *b)
                a++, b++;
            if (a == end && !*b)
                found = k;
        }
        if (found < 0 || (*flags & bits[found]))
            return -1; /* unknown, empty or repeated */
        *flags |= bits[found];
        if (!*end)
            return 0;
        item = end + 1;
    }
}

static void parse(int argc, char **argv, struct plan *p)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        u64 n;
        if (str_eq(a, "--"))
            break;
        if ((v = option(a, "--report-fd"))) {
            if (parse_u64(v, v + str_len(v), 10, 0x7fffffff, &n) < 0)
                goto bad;
            /* Close-on-exec: the program must not inherit it, and EOF signals a good exec. */
            long r = hx_cloexec((int)n);
            if (r < 0)
                fail("report_fd", (int)-r, -1);
            report_fd = (int)n;
        } else if ((v = option(a, "--env-fd"))) {
            if (parse_fd(v, &p->env_fd) < 0)
                goto bad;
        } else if ((v = option(a, "--cgroup-fd"))) {
            if (parse_fd(v, &p->cgroup_fd) < 0)
                goto bad;
        } else if (str_eq(a, "--cgroup-strict")) {
            p->cgroup_strict = 1;
        } else if ((v = option(a, "--rlimit"))) {
            if (parse_rlimit(v, p) < 0)
                goto bad;
        } else if ((v = option(a, "--uid"))) {
            if (parse_id(v, v + str_len(v), &p->uid) < 0)
                goto bad;
            p->has_uid = 1;
        } else if ((v = option(a, "--gid"))) {
            if (parse_id(v, v + str_len(v), &p->gid) < 0)
                goto bad;
            p->has_gid = 1;
        } else if ((v = option(a, "--groups-fd"))) {
            if (parse_fd(v, &p->groups_fd) < 0)
                goto bad;
            p->set_groups = 1;
        } else if (str_eq(a, "--clear-groups")) {
            p->set_groups = 1;
            p->groups_fd = -1;
        } else if ((v = option(a, "--drop-caps"))) {
            if (str_len(v) > 16 || parse_u64(v, v + str_len(v), 16, ~0ull, &p->keep) < 0)
                goto bad;
            p->drop_caps = 1;
        } else if (str_eq(a, "--strict")) {
            p->strict = 1;
        } else if (str_eq(a, "--nnp")) {
            p->nnp = 1;
        } else if ((v = option(a, "--die-with-parent"))) {
            if (parse_u64(v, v + str_len(v), 10, 0x7fffffff, &n) < 0 || n == 0)
                goto bad;
            p->parent = (long)n;
        } else if ((v = option(a, "--ignore-signals"))) {
            if (parse_signals(v, &p->ignore_signals) < 0)
                goto bad;
        } else if ((v = option(a, "--umask"))) {
            if (str_len(v) > 4 || parse_u64(v, v + str_len(v), 8, 0777, &n) < 0)
                goto bad;
            p->umask = (long)n;
        } else if ((v = option(a, "--unshare"))) {
            if (parse_unshare(v, &p->unshare) < 0)
                goto bad;
        } else if ((v = option(a, "--hostname"))) {
            p->hostname = v;
        } else if ((v = option(a, "--landlock-fd"))) {
            if (parse_fd(v, &p->landlock_fd) < 0)
                goto bad;
        } else if ((v = option(a, "--seccomp-fd"))) {
            if (parse_fd(v, &p->seccomp_fd) < 0)
                goto bad;
        } else if ((v = option(a, "--seccomp-notify-fd"))) {
            if (parse_fd(v, &p->notify_fd) < 0)
                goto bad;
            hx_cloexec(p->notify_fd); /* the program has no business with it (EBADF: later) */
        } else if (str_eq(a, "--lock-securebits")) {
            p->lock_securebits = 1;
        } else if (str_eq(a, "--trace-exec")) {
            p->trace_exec = 1;
        } else if ((v = option(a, "--trace-exec"))) {
            if (parse_u64(v, v + str_len(v), 10, 0x7fffffff, &n) < 0 || n == 0)
                goto bad;
            p->trace_exec = 1;
            p->tracer = (long)n;
        } else if ((v = option(a, "--exec"))) {
            p->exec_path = v;
        } else {
            goto bad;
        }
    }
    if (i >= argc - 1) /* no "--", or nothing after it */
        goto bad;
    if (p->notify_fd >= 0 && p->seccomp_fd < 0)
        goto bad;
    if (p->hostname && !(p->unshare & CLONE_NEWUTS_)) /* it would rename the caller's host */
        goto bad;
    if (p->trace_exec && (p->unshare & CLONE_NEWPID_)) /* the relay would be the tracer */
        goto bad;
    p->argv = argv + i + 1;
    return;
bad:
    fail("arguments", EINVAL, -1);
}

/* Move this process into the program's cgroup; the parent opened its cgroup.procs for us. */
static void join_cgroup(const struct plan *p)
{
    long r = hx_write(p->cgroup_fd, "0", 1);
    hx_close(p->cgroup_fd);
    if (r < 0) {
        if (p->cgroup_strict)
            fail("cgroup_join", (int)-r, -1);
        report('W', "cgroup_join", (int)-r, -1);
    }
}

/* Each limit becomes a ceiling the program cannot raise: soft = hard = min(asked, hard). */
static void set_rlimits(const struct plan *p)
{
    for (int i = 0; i < p->nrlimits; i++) {
        struct rlimit64 old, lim;
        int resource = p->rlimit_resource[i];
        long r = hx_prlimit(resource, 0, &old);
        if (r >= 0) {
            lim.cur = lim.max = p->rlimit_value[i] < old.max ? p->rlimit_value[i] : old.max;
            r = hx_prlimit(resource, &lim, 0);
        }
        if (r < 0)
            fail("setrlimit", (int)-r, resource);
    }
}

/* Whether the program will run as root with execve's root rule in force: then every cap left
 * in the bounding set comes back at exec (capabilities(7), "Capabilities and execution of
 * programs by root"), unless no_new_privs caps the gain at the current permitted set or
 * SECBIT_NOROOT turns the rule off. */
static int root_regains(const struct plan *p)
{
    unsigned int ids[3] = {1, 1, 1};
    long bits = hx_prctl(PR_GET_SECUREBITS, 0, 0);
    if (p->nnp || (bits > 0 && (bits & 1 /* SECBIT_NOROOT */)))
        return 0;
    if (p->has_uid)
        return p->uid == 0;
    hx_getresuid(ids);
    return ids[0] == 0 || ids[1] == 0;
}

/* Keep only the kept caps in the bounding set, 0..cap_last_cap as the kernel reports it. */
static void drop_bounding(const struct plan *p)
{
    int first_err = 0, first_cap = -1;
    for (int cap = 0; cap <= MAX_CAP; cap++) {
        long in = hx_prctl(PR_CAPBSET_READ, (unsigned long)cap, 0);
        if (in < 0)
            break; /* EINVAL: past the kernel's cap_last_cap */
        if (!in || (p->keep >> cap & 1))
            continue;
        long r = hx_prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0);
        if (r < 0 && !first_err) {
            first_err = (int)-r;
            first_cap = cap;
            if (p->strict)
                break;
        }
    }
    /* The same cause (no CAP_SETPCAP) fails every cap: one warning, naming the first. Best
     * effort cannot cover a root program: it would get the opposite of what was asked. */
    if (first_err && root_regains(p))
        fail_why("bounding_set", first_err, first_cap,
                 "no CAP_SETPCAP: root would regain every capability at exec");
    if (first_err && p->strict)
        fail("bounding_set", first_err, first_cap);
    if (first_err)
        report_why('W', "bounding_set", first_err, first_cap,
                   p->nnp ? 0
                          : "the launcher lacks CAP_SETPCAP; set-user-ID and file-capability "
                            "programs it runs can regain what stays in the bounding set; "
                            "no_new_privs prevents that");
}

/* E = P = I = keep & P. Returns the caps actually kept (for the ambient raise). */
static u64 set_caps(const struct plan *p)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    long r = hx_capget(&hdr, data);
    if (r < 0) {
        cap_failed(p, "capget", (int)-r, -1);
        return 0;
    }
    u64 permitted = (u64)data[1].permitted << 32 | data[0].permitted;
    u64 missing = p->keep & ~permitted;
    for (int cap = 0; cap <= MAX_CAP; cap++)
        if (missing >> cap & 1)
            cap_failed(p, "keep_caps", EPERM, cap);
    u64 want = p->keep & permitted;
    for (int w = 0; w < 2; w++) {
        unsigned int bits = (unsigned int)(want >> (32 * w));
        data[w].effective = data[w].permitted = data[w].inheritable = bits;
    }
    r = hx_capset(&hdr, data);
    if (r < 0) {
        cap_failed(p, "capset", (int)-r, -1);
        return 0;
    }
    return want;
}

static void set_ambient(const struct plan *p, u64 kept)
{
    long r = hx_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0);
    if (r < 0)
        cap_failed(p, "ambient_clear", (int)-r, -1);
    for (int cap = 0; cap <= MAX_CAP; cap++) {
        if (!(kept >> cap & 1))
            continue;
        r = hx_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (unsigned long)cap);
        if (r < 0)
            cap_failed(p, "ambient_raise", (int)-r, cap);
    }
}

/* The program's environment, from the sealed memfd the parent wrote (the stage itself was
 * started with a fixed, empty one, so no loader or interpreter variable of the program's can
 * act inside this privileged process): "NAME=value\0" entries. */
static void load_env(struct plan *p)
{
    static char *empty[1];
    long size = hx_size(p->env_fd), base;
    p->envp = empty;
    if (size < 0)
        fail("env_fd", (int)-size, -1);
    if (size > 0) {
        if ((base = hx_map(p->env_fd, (unsigned long)size)) < 0)
            fail("env_fd", (int)-base, -1);
        const char *text = (const char *)base;
        unsigned long n = 0;
        if (text[size - 1] != '\0')
            fail("env_fd", EINVAL, -1);
        for (long i = 0; i < size; i++)
            n += text[i] == '\0';
        long array = hx_alloc((n + 1) * sizeof(char *));
        if (array < 0)
            fail("env_fd", (int)-array, -1);
        p->envp = (char **)array;
        n = 0;
        for (long i = 0; i < size; i += (long)str_len(text + i) + 1)
            p->envp[n++] = (char *)(text + i);
        p->envp[n] = 0;
    }
    hx_close(p->env_fd);
}

/* Supplementary groups as native 32-bit gids, from a memfd: no argv length limit applies, so
 * the kernel's 65536 fit. */
static void load_groups(struct plan *p)
{
    long size = hx_size(p->groups_fd), base;
    if (size < 0)
        fail("groups_fd", (int)-size, -1);
    if (size % 4 || size / 4 > MAX_GROUPS)
        fail("groups_fd", EINVAL, -1);
    p->ngroups = (unsigned long)size / 4;
    if (size > 0) {
        if ((base = hx_map(p->groups_fd, (unsigned long)size)) < 0)
            fail("groups_fd", (int)-base, -1);
        p->groups = (const unsigned int *)base;
        for (unsigned long i = 0; i < p->ngroups; i++)
            if (p->groups[i] == 0xFFFFFFFFu) /* (gid_t)-1 is "unchanged", never an id */
                fail("groups_fd", EINVAL, -1);
    }
    hx_close(p->groups_fd);
}

static const char *env_path(char **envp)
{
    for (; *envp; envp++) {
        const char *v = option(*envp, "PATH");
        if (v)
            return v;
    }
    return "/bin:/usr/bin"; /* os.defpath, as CPython's subprocess uses */
}

/* execve, searching PATH from the program's own environment the way CPython's subprocess does:
 * an empty entry means the current directory; the first error other than ENOENT/ENOTDIR wins. */
static __attribute__((noreturn)) void exec_program(const struct plan *p)
{
    static char buf[MAX_PATH];
    const char *file = p->exec_path ? p->exec_path : p->argv[0];
    int has_slash = 0;
    for (const char *c = file; *c; c++)
        has_slash |= *c == '/';
    if (has_slash) /* else searched on PATH, --exec too, as subprocess does for executable= */
        fail("exec", (int)-hx_execve(file, p->argv, p->envp), -1);

    unsigned long flen = str_len(file);
    int saved = 0, last = ENOENT;
    for (const char *dir = env_path(p->envp);; dir++) {
        const char *end = dir;
        while (*end && *end != ':')
            end++;
        unsigned long dlen = (unsigned long)(end - dir);
        if (dlen + 1 + flen + 1 > sizeof buf) {
            last = ENAMETOOLONG; /* what the kernel would say of the joined name */
        } else {
            memcpy(buf, dir, dlen);
            if (dlen)
                buf[dlen++] = '/';
            memcpy(buf + dlen, file, flen + 1);
            last = (int)-hx_execve(buf, p->argv, p->envp);
        }
        if (last != ENOENT && last != ENOTDIR && !saved)
            saved = last;
        if (!*end)
            break;
        dir = end;
    }
    fail("exec", saved ? saved : last, -1);
}

/* ---- confinement: namespaces, Landlock, the pid-namespace relay, seccomp ------------------ */

/* A memfd's whole content as a private read-only mapping (step names the memfd on failure). */
static const char *map_memfd(int fd, const char *step, long *size_out)
{
    long size = hx_size(fd), base = 0;
    if (size < 0)
        fail(step, (int)-size, -1);
    if (size > 0 && (base = hx_map(fd, (unsigned long)size)) < 0)
        fail(step, (int)-base, -1);
    hx_close(fd);
    *size_out = size;
    return (const char *)base;
}

/* "HEX" up to the end or ':' → value; returns the char after it, or 0 when malformed. */
static const char *hex_field(const char *s, const char *end, u64 *out)
{
    const char *stop = s;
    while (stop < end && *stop != ':')
        stop++;
    if (parse_u64(s, stop, 16, ~0ull, out) < 0)
        return 0;
    return stop;
}

/* The rules blob: fs=HEX, [net=HEX], path=HEX:PATH..., port=HEX:PORT... (NUL-terminated). */
static void load_landlock(struct plan *p)
{
    long size;
    const char *text = map_memfd(p->landlock_fd, "landlock_fd", &size);
    /* The order: fs=, then net= and scope= (each optional, in that order), paths, ports. */
    enum { WANT_FS, AFTER_FS, AFTER_NET, AFTER_SCOPE, AFTER_PATH, AFTER_PORT } stage = WANT_FS;
    if (size <= 0 || text[size - 1] != '\0')
        fail("landlock_fd", EINVAL, -1);
    for (long i = 0; i < size; i += (long)str_len(text + i) + 1) {
        const char *e = text + i, *end = e + str_len(e), *v;
        u64 n;
        if ((v = option(e, "fs")) && stage == WANT_FS) {
            if (!hex_field(v, end, &n) || hex_field(v, end, &n) != end)
                fail("landlock_fd", EINVAL, -1);
            stage = AFTER_FS;
        } else if ((v = option(e, "net")) && stage == AFTER_FS) {
            if (!hex_field(v, end, &n) || hex_field(v, end, &n) != end)
                fail("landlock_fd", EINVAL, -1);
            stage = AFTER_NET;
        } else if ((v = option(e, "scope")) && (stage == AFTER_FS || stage == AFTER_NET)) {
            if (!hex_field(v, end, &n) || hex_field(v, end, &n) != end)
                fail("landlock_fd", EINVAL, -1);
            stage = AFTER_SCOPE;
        } else if ((v = option(e, "path")) && stage >= AFTER_FS && stage <= AFTER_PATH) {
            const char *colon = hex_field(v, end, &n);
            if (!colon || colon == end || colon + 1 == end)
                fail("landlock_fd", EINVAL, -1);
            stage = AFTER_PATH;
        } else if ((v = option(e, "port")) && stage >= AFTER_FS) {
            const char *colon = hex_field(v, end, &n);
            if (!colon || colon == end || parse_u64(colon + 1, end, 10, 65535, &n) < 0)
                fail("landlock_fd", EINVAL, -1);
            stage = AFTER_PORT;
        } else {
            fail("landlock_fd", EINVAL, -1);
        }
    }
    if (stage == WANT_FS)
        fail("landlock_fd", EINVAL, -1);
    p->landlock = text;
    p->landlock_size = size;
}

static void load_filter(struct plan *p)
{
    long size;
    const char *code = map_memfd(p->seccomp_fd, "seccomp_fd", &size);
    if (size <= 0 || size % 8 || size / 8 > 4096) /* BPF_MAXINSNS */
        fail("seccomp_fd", EINVAL, -1);
    p->filter = code;
    p->filter_len = (unsigned long)size / 8;
}

/* Write all of text to a /proc file (uid_map and friends take one write). */
static long write_file(const char *path, const char *text)
{
    long fd = hx_sys(NR_OPENAT, -100 /* AT_FDCWD */, (long)path, 01 | 02000000 /* WRONLY|CLOEXEC */,
                     0, 0);
    if (fd < 0)
        return fd;
    long r = hx_write((int)fd, text, str_len(text));
    hx_close((int)fd);
    return r < 0 ? r : 0;
}

static void id_map(char *buf, unsigned int id) /* "ID ID 1" */
{
    struct line l = {.n = 0};
    put_num(&l, id);
    put(&l, " ");
    put_num(&l, id);
    put(&l, " 1");
    memcpy(buf, l.buf, l.n);
    buf[l.n] = 0;
}

struct ifreq_flags {
    char name[16];
    short flags;
    char pad[22];
};

static void enter_namespaces(const struct plan *p)
{
    unsigned int uids[3] = {0, 0, 0}, gids[3] = {0, 0, 0};
    int user = (p->unshare & CLONE_NEWUSER_) != 0;
    long r;
    hx_getresuid(uids);
    hx_sys(NR_GETRESGID, (long)&gids[0], (long)&gids[1], (long)&gids[2], 0, 0);
    if ((r = hx_sys(NR_UNSHARE, p->unshare, 0, 0, 0, 0)) < 0)
        fail(user ? "userns" : "unshare", (int)-r, -1);
    if (user) {
        /* An unprivileged process may map only its own ids, and only once setgroups is denied
         * (user_namespaces(7)); the program then sees the ids it had. */
        char map[40];
        if ((r = write_file("/proc/self/setgroups", "deny")) < 0)
            fail("userns", (int)-r, -1);
        id_map(map, uids[1]);
        if ((r = write_file("/proc/self/uid_map", map)) < 0)
            fail("userns", (int)-r, -1);
        id_map(map, gids[1]);
        if ((r = write_file("/proc/self/gid_map", map)) < 0)
            fail("userns", (int)-r, -1);
    }
    if (p->unshare & CLONE_NEWNET_) { /* a new network namespace has lo, but down */
        struct ifreq_flags ifr = {.name = "lo"};
        long sock = hx_sys(NR_SOCKET, 2 /* AF_INET */, 2 | 02000000 /* DGRAM|CLOEXEC */, 0, 0, 0);
        if (sock < 0)
            fail("loopback", (int)-sock, -1);
        r = hx_sys(NR_IOCTL, sock, 0x8913 /* SIOCGIFFLAGS */, (long)&ifr, 0, 0);
        if (r >= 0) {
            ifr.flags |= 1; /* IFF_UP */
            r = hx_sys(NR_IOCTL, sock, 0x8914 /* SIOCSIFFLAGS */, (long)&ifr, 0, 0);
        }
        hx_close((int)sock);
        if (r < 0)
            fail("loopback", (int)-r, -1);
    }
    if (p->hostname && (r = hx_sys(NR_SETHOSTNAME, (long)p->hostname, (long)str_len(p->hostname),
                                   0, 0, 0)) < 0)
        fail("hostname", (int)-r, -1);
}

#define LL_FILE_RIGHTS (1ull | 2ull | 4ull | (1ull << 14) | (1ull << 15))

/* Build the Landlock ruleset now, with the launcher's view of the paths; enforce it later. */
static void build_ruleset(struct plan *p)
{
    u64 attr[3] = {0, 0, 0}, n; /* handled_access_fs, handled_access_net, scoped */
    unsigned long attr_size = 8; /* the ABI-1 form, unless network rights or scopes are asked */
    int index = 0;
    const char *text = p->landlock;
    for (long i = 0; i < p->landlock_size; i += (long)str_len(text + i) + 1) {
        const char *e = text + i, *end = e + str_len(e), *v;
        if ((v = option(e, "fs")))
            hex_field(v, end, &attr[0]);
        else if ((v = option(e, "net")) && hex_field(v, end, &attr[1]))
            attr_size = attr_size > 16 ? attr_size : 16;
        else if ((v = option(e, "scope")) && hex_field(v, end, &attr[2]))
            attr_size = 24;
    }
    long fd = hx_sys(NR_LANDLOCK_CREATE, (long)attr, (long)attr_size, 0, 0, 0);
    if (fd < 0)
        fail("landlock", (int)-fd, -1);
    p->ruleset_fd = (int)fd;
    for (long i = 0; i < p->landlock_size; i += (long)str_len(text + i) + 1) {
        const char *e = text + i, *end = e + str_len(e), *v, *colon;
        long r;
        if ((v = option(e, "path"))) {
            colon = hex_field(v, end, &n);
            long dir = hx_sys(NR_OPENAT, -100, (long)(colon + 1), 010000000 | 02000000 /* O_PATH|CLOEXEC */, 0, 0);
            if (dir < 0) /* on stderr, the path too: without a report the parent cannot */
                fail_why("landlock_path", (int)-dir, index, colon + 1);
            /* statx's layout is the same on every architecture: stx_mode is at byte 28. */
            unsigned char stx[256];
            r = hx_sys(NR_STATX, dir, (long)"", 0x1000 /* AT_EMPTY_PATH */, 1 /* STATX_TYPE */,
                       (long)stx);
            if (r < 0)
                fail_why("landlock_path", (int)-r, index, colon + 1);
            unsigned int mode = stx[28] | (unsigned int)stx[29] << 8;
            if ((mode & 0170000) != 0040000) /* not a directory: file rights only */
                n &= LL_FILE_RIGHTS;
            struct __attribute__((packed)) {
                u64 allowed;
                int parent_fd;
            } rule = {n & attr[0], (int)dir};
            r = rule.allowed ? hx_sys(NR_LANDLOCK_ADD, fd, 1 /* PATH_BENEATH */, (long)&rule, 0, 0)
                             : 0; /* nothing left to allow: the kernel refuses empty rules */
            hx_close((int)dir);
            if (r < 0)
                fail("landlock_rule", (int)-r, index);
            index++;
        } else if ((v = option(e, "port"))) {
            u64 port = 0;
            colon = hex_field(v, end, &n);
            parse_u64(colon + 1, end, 10, 65535, &port);
            u64 rule[2] = {n & attr[1], port};
            r = rule[0] ? hx_sys(NR_LANDLOCK_ADD, fd, 2 /* NET_PORT */, (long)rule, 0, 0) : 0;
            if (r < 0)
                fail("landlock_rule", (int)-r, index);
            index++;
        }
    }
}

static long hx_fork(void) { return hx_sys(NR_CLONE, 17 /* SIGCHLD */, 0, 0, 0, 0); }
static long hx_sigmask(int how, const u64 *set, u64 *old)
{
    return hx_sys(NR_RT_SIGPROCMASK, how, (long)set, (long)old, 8, 0);
}
static void close_from(int first) /* every fd from first up */
{
    if (hx_sys(NR_CLOSE_RANGE, first, ~0u, 0, 0, 0) < 0)
        for (int fd = first; fd < 4096; fd++) /* kernels before 5.9 */
            hx_close(fd);
}

/* The namespace's init: it only reaps (SIGCHLD ignored: the kernel reaps orphans for it) and
 * lives exactly as long as the relay, whose pipe end hangs up when the relay is gone by any
 * means (even SIGKILL). Its exit makes the kernel kill everything left in the namespace. */
static __attribute__((noreturn)) void pid_ns_init(int read_end)
{
    struct hx_pollfd {
        int fd;
        short events, revents;
    } pfd = {read_end, 1 /* POLLIN */, 0};
    char byte;
    for (int fd = 0; fd < read_end; fd++)
        hx_close(fd);
    close_from(read_end + 1);
    struct {
        unsigned long handler, flags, restorer, mask;
    } ign = {1 /* SIG_IGN */, 0, 0, 0};
    hx_sys(NR_RT_SIGACTION, 17, (long)&ign, 0, 8, 0);
    for (;;) {
        long r = hx_sys(NR_PPOLL, (long)&pfd, 1, 0, 0, 8);
        if (r > 0 && hx_sys(NR_READ, read_end, (long)&byte, 1, 0, 0) != -EINTR)
            hx_exit(0); /* hung up (or written to): the relay is gone */
    }
}

/* The relay (the process the parent started): it forwards every signal to the program's
 * process, and when that ends, ends the namespace and then itself with the same status. */
static __attribute__((noreturn)) void pid_ns_relay(long init, long program, int write_end)
{
    struct {
        unsigned int signo;
        char rest[124];
    } info;
    u64 all = ~0ull;
    int status = 0;
    struct rlimit64 no_core = {0, 0};
    /* Nothing of the program's may stay open here: its output pipes and the report pipe must
     * reach end-of-file when the program is done with them. */
    for (int fd = 0; fd < write_end; fd++)
        hx_close(fd);
    close_from(write_end + 1);
    hx_prlimit(4 /* RLIMIT_CORE */, &no_core, 0); /* a dump of the relay would be no use */
    long sfd = hx_sys(NR_SIGNALFD4, -1, (long)&all, 8, 02000000 /* SFD_CLOEXEC */, 0);
    for (;;) {
        long r = sfd >= 0 ? hx_sys(NR_READ, sfd, (long)&info, sizeof info, 0, 0) : -EINVAL;
        if (r == -EINTR)
            continue;
        if (r < 0)
            info.signo = 17; /* cannot happen; still never spin: wait for the program */
        if (info.signo != 17 /* SIGCHLD */) {
            hx_sys(NR_KILL, program, info.signo, 0, 0, 0);
            continue;
        }
        r = hx_sys(NR_WAIT4, program, (long)&status, r < 0 ? 0 : 1 /* WNOHANG */, 0, 0);
        if (r == program)
            break;
    }
    hx_sys(NR_KILL, init, 9, 0, 0, 0);
    while (hx_sys(NR_WAIT4, init, 0, 0, 0, 0) == -EINTR)
        ;
    if ((status & 0x7f) == 0)
        hx_exit((status >> 8) & 0xff);
    int sig = status & 0x7f;
    struct {
        unsigned long handler, flags, restorer, mask;
    } dfl = {0 /* SIG_DFL */, 0, 0, 0};
    u64 one = 1ull << (sig - 1);
    hx_sys(NR_RT_SIGACTION, sig, (long)&dfl, 0, 8, 0);
    hx_sys(NR_KILL, hx_sys(NR_GETPID, 0, 0, 0, 0, 0), sig, 0, 0, 0);
    hx_sigmask(1 /* SIG_UNBLOCK */, &one, 0);
    hx_exit(128 + sig);
}

/* CLONE_NEWPID applies to children only: fork the namespace's init first (it is pid 1 there),
 * then the program's process; this process stays outside as the relay. Returns in the latter. */
static void enter_pid_ns(struct plan *p)
{
    u64 all = ~0ull, old = 0;
    int ends[2];
    long r;
    if (p->parent) { /* the relay's own death signal: its credentials never change */
        if ((r = hx_prctl(PR_SET_PDEATHSIG, 9, 0)) < 0)
            fail("die_with_parent", (int)-r, -1);
        if (hx_getppid() != p->parent)
            fail_why("die_with_parent", ESRCH, -1, "the parent has already exited");
    }
    hx_sigmask(0 /* SIG_BLOCK */, &all, &old);
    if ((r = hx_sys(NR_PIPE2, (long)ends, 02000000 /* O_CLOEXEC */, 0, 0, 0)) < 0)
        fail("pid_ns", (int)-r, -1);
    long init = hx_fork();
    if (init < 0)
        fail("pid_ns", (int)-init, -1);
    if (init == 0) {
        hx_close(ends[1]);
        pid_ns_init(ends[0]);
    }
    long program = hx_fork();
    if (program < 0) {
        hx_sys(NR_KILL, init, 9, 0, 0, 0);
        fail("pid_ns", (int)-program, -1);
    }
    if (program > 0) {
        hx_close(ends[0]);
        pid_ns_relay(init, program, ends[1]);
    }
    hx_close(ends[0]);
    hx_close(ends[1]);
    hx_sigmask(2 /* SIG_SETMASK */, &old, 0);
    p->in_pid_ns = 1;
}

/* --trace-exec: the parent becomes our tracer (PTRACE_TRACEME), so the kernel stops the
 * program at its execve, before its first instruction, for the parent to read its credentials
 * and either detach or kill it. Then we stop ourselves: at that stop the parent sets
 * PTRACE_O_EXITKILL (a tracer that dies from then on takes us with it) and PTRACE_O_TRACEEXEC,
 * and continues us. The "T" record tells it the stop is coming. Continued without a tracer
 * (it died before setting EXITKILL, and something sent SIGCONT), a second TRACEME succeeds,
 * and the program must not run unchecked: abort. (Without a report pipe there is no T record;
 * hardexec always gives one when it traces.) */
static void trace_exec(const struct plan *p)
{
    long r;
    /* With the tracer named: die with it until it has set EXITKILL, and never let TRACEME make
     * whoever inherited us (init, a subreaper) our tracer: a launcher killed before this step
     * would otherwise leave us stopped for good. */
    if (p->tracer) {
        if ((r = hx_prctl(PR_SET_PDEATHSIG, 9 /* SIGKILL */, 0)) < 0)
            fail("trace", (int)-r, -1);
        if (hx_getppid() != p->tracer)
            fail_why("trace", ESRCH, -1, "the launcher has already exited");
    }
    r = hx_sys(NR_PTRACE, 0 /* PTRACE_TRACEME */, 0, 0, 0, 0);
    if (r < 0)
        fail("trace", (int)-r, -1);
    if (report_fd >= 0)
        report('T', "trace", 0, -1);
    hx_sys(NR_KILL, hx_sys(NR_GETPID, 0, 0, 0, 0, 0), HX_SIGSTOP, 0, 0, 0);
    if (hx_sys(NR_PTRACE, 0, 0, 0, 0, 0) == 0)
        fail_why("trace", ESRCH, -1, "the launcher stopped tracing before the program started");
    /* EXITKILL covers us now; the death signal is the policy's to ask for (set late). */
    if (p->tracer && !p->parent && (r = hx_prctl(PR_SET_PDEATHSIG, 0, 0)) < 0)
        fail("trace", (int)-r, -1);
}

struct sock_fprog_ {
    unsigned short len;
    const void *filter;
};

/* The last step before execve: from here on the filter applies to this process too. */
static void install_filter(const struct plan *p)
{
    struct sock_fprog_ prog = {(unsigned short)p->filter_len, p->filter};
    long flags = p->notify_fd >= 0 ? 8 /* SECCOMP_FILTER_FLAG_NEW_LISTENER */ : 0;
    long listener = hx_sys(NR_SECCOMP, 1 /* SET_MODE_FILTER */, flags, (long)&prog, 0, 0);
    if (listener < 0)
        fail("seccomp", (int)-listener, -1);
    if (p->notify_fd < 0)
        return;
    /* The filter lets exactly this sendmsg through (its fd argument), so the parent can answer
     * the program's denied syscalls; the listener itself is close-on-exec. */
    char data = 'L';
    struct {
        void *base;
        unsigned long len;
    } iov = {&data, 1};
    struct {
        unsigned long len;
        int level, type;
        int fd;
        int pad;
    } cmsg = {20 /* CMSG_LEN(sizeof(int)) */, 1 /* SOL_SOCKET */, 1 /* SCM_RIGHTS */,
              (int)listener, 0};
    struct {
        void *name;
        unsigned int namelen, pad0;
        void *iov;
        unsigned long iovlen;
        void *control;
        unsigned long controllen;
        int flags, pad1;
    } msg = {0, 0, 0, &iov, 1, &cmsg, 24 /* CMSG_SPACE(sizeof(int)) */, 0, 0};
    long r;
    while ((r = hx_sys(NR_SENDMSG, p->notify_fd, (long)&msg, 0x4000 /* MSG_NOSIGNAL */, 0, 0)) ==
           -EINTR)
        ;
    if (r < 0)
        fail("seccomp_notify", (int)-r, -1);
}

static int stage_main(int argc, char **argv, char **envp)
{
    struct plan p = {.cgroup_fd = -1, .env_fd = -1, .groups_fd = -1, .envp = envp, .umask = -1,
                     .landlock_fd = -1, .seccomp_fd = -1, .notify_fd = -1, .ruleset_fd = -1};
    long r;
    parse(argc, argv, &p);
    program_name = p.exec_path ? p.exec_path : p.argv[0];
    if (p.env_fd >= 0)
        load_env(&p);
    if (p.groups_fd >= 0)
        load_groups(&p);
    if (p.landlock_fd >= 0)
        load_landlock(&p);
    if (p.seccomp_fd >= 0)
        load_filter(&p);
    if (p.trace_exec)
        trace_exec(&p);

    if (p.cgroup_fd >= 0)
        join_cgroup(&p);
    set_rlimits(&p);
    if (p.umask >= 0)
        hx_sys(NR_UMASK, p.umask, 0, 0, 0, 0);
    if (p.unshare)
        enter_namespaces(&p);
    if (p.landlock)
        build_ruleset(&p);
    if (p.unshare & CLONE_NEWPID_)
        enter_pid_ns(&p); /* from here on: the program's process, inside the namespace */
    if (p.set_groups && (r = hx_setgroups(p.ngroups, p.groups)) < 0)
        fail("setgroups", (int)-r, -1);
    if (p.has_gid && (r = hx_setresgid(p.gid)) < 0)
        fail("setresgid", (int)-r, -1);
    if (p.drop_caps)
        drop_bounding(&p);
    if (p.has_uid) {
        if (p.drop_caps && (r = hx_prctl(PR_SET_KEEPCAPS, 1, 0)) < 0)
            cap_failed(&p, "keepcaps", (int)-r, -1);
        if ((r = hx_setresuid(p.uid)) < 0)
            fail("setresuid", (int)-r, -1);
    }
    if (p.lock_securebits) {
        /* Needs CAP_SETPCAP, still effective until capset below. NOROOT: execve gives uid 0
         * nothing; the locks keep the program from turning that (or the setuid fixup) off. */
        if ((r = hx_prctl(PR_SET_SECUREBITS, 0x0b, 0)) < 0)
            cap_failed(&p, "securebits", (int)-r, -1);
    }
    if (p.drop_caps)
        set_ambient(&p, set_caps(&p));
    if (p.nnp && (r = hx_prctl(PR_SET_NO_NEW_PRIVS, 1, 0)) < 0)
        fail("no_new_privs", (int)-r, -1);
    for (int sig = 1; sig <= 64; sig++)
        if ((p.ignore_signals >> (sig - 1) & 1) && (r = hx_ignore_signal(sig)) < 0)
            fail("ignore_signals", (int)-r, sig);
    if (p.parent) {
        /* Last before exec: a credential change clears the death signal (prctl(2)), and the
         * check after setting it closes the race with a parent that died before it was set. */
        if ((r = hx_prctl(PR_SET_PDEATHSIG, 9 /* SIGKILL */, 0)) < 0)
            fail("die_with_parent", (int)-r, -1);
        /* Inside a new pid namespace the parent (the relay) is outside it and reads as 0. */
        if (hx_getppid() != (p.in_pid_ns ? 0 : p.parent))
            fail_why("die_with_parent", ESRCH, -1, "the parent has already exited");
    }
    if (p.ruleset_fd >= 0) {
        /* Late: the steps above still read /proc; Landlock needs no_new_privs or
         * CAP_SYS_ADMIN here, which the parent made sure of. */
        if ((r = hx_sys(NR_LANDLOCK_RESTRICT, p.ruleset_fd, 0, 0, 0, 0)) < 0)
            fail("landlock", (int)-r, -1);
        hx_close(p.ruleset_fd);
    }
    if (p.filter)
        install_filter(&p);
    exec_program(&p);
}
