//! The system-call filter of youki pods (gVisor pods run on gVisor's own
//! kernel and are filtered by gVisor).
//!
//! The same policy as Docker's and runc's default profile, for the
//! capabilities a pod has (see [`crate::bundle::POD_CAPABILITIES`]): every
//! call an ordinary program, build tool, debugger or language runtime
//! uses is allowed; what only an administrator of the machine needs is
//! refused with `EPERM`: namespaces (`unshare`, `setns`, `clone` with a
//! namespace flag), mounts (old and new mount API), kernel keyrings, BPF,
//! performance counters, kernel modules, clocks, swap, reboot, `kexec`,
//! `userfaultfd`, the `AF_VSOCK` family and exotic `personality` values.
//! `clone3` answers `ENOSYS`: its flags sit in memory a filter cannot read,
//! and C libraries fall back to `clone`, whose flags the filter checks.
//!
//! Syscall names unknown to the running kernel's architecture are skipped
//! by libcontainer, so one list serves x86-64 and arm64.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};

/// Files, directories, links, attributes and descriptors.
const FILES: &[&str] = &[
    "access", "faccessat", "faccessat2", "open", "openat", "openat2", "creat", "close", "close_range", "read",
    "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek",
    "_llseek", "dup", "dup2", "dup3", "fcntl", "fcntl64", "ioctl", "flock", "fsync", "fdatasync", "syncfs",
    "sync", "sync_file_range", "fallocate", "ftruncate", "ftruncate64", "truncate", "truncate64", "stat",
    "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat64", "newfstatat", "statx", "statfs", "statfs64",
    "fstatfs", "fstatfs64", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
    "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat",
    "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "chown32", "fchown",
    "fchown32", "fchownat", "lchown", "lchown32", "umask", "utime", "utimes", "utimensat", "utimensat_time64",
    "futimesat", "mknod", "mknodat", "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
    "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr", "copy_file_range",
    "sendfile", "sendfile64", "splice", "tee", "vmsplice", "fadvise64", "fadvise64_64", "readahead",
    "name_to_handle_at", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "fanotify_mark", "memfd_create", "memfd_secret", "pipe", "pipe2", "eventfd", "eventfd2", "signalfd",
    "signalfd4", "timerfd_create", "timerfd_settime", "timerfd_settime64", "timerfd_gettime",
    "timerfd_gettime64", "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "io_uring_setup", "io_uring_enter", "io_uring_register", "ioprio_get",
    "ioprio_set", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
];

/// Waiting for events.
const POLLING: &[&str] = &[
    "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2",
];

/// Processes, threads, credentials, scheduling and limits (but `clone`,
/// checked on its flags below).
const PROCESSES: &[&str] = &[
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "waitpid", "getpid",
    "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "getuid", "getuid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getegid", "getegid32", "getresuid", "getresuid32", "getresgid",
    "getresgid32", "getgroups", "getgroups32", "setuid", "setuid32", "setgid", "setgid32", "setreuid",
    "setreuid32", "setregid", "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32", "setfsuid",
    "setfsuid32", "setfsgid", "setfsgid32", "setgroups", "setgroups32", "capget", "capset", "prctl",
    "arch_prctl", "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex", "futex_time64",
    "futex_waitv", "set_thread_area", "get_thread_area", "modify_ldt", "getrlimit", "ugetrlimit", "setrlimit",
    "prlimit64", "getrusage", "getpriority", "setpriority", "sched_yield", "sched_getaffinity",
    "sched_setaffinity", "sched_getattr", "sched_setattr", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "getcpu", "seccomp", "pidfd_open",
    "pidfd_send_signal", "process_mrelease", "membarrier", "restart_syscall", "uname", "sysinfo", "times",
    "getrandom",
    // debuggers and profilers (gdb, strace, py-spy): allowed by Docker's
    // default too, since kernels past 4.8 check seccomp after ptrace
    "ptrace", "process_vm_readv", "process_vm_writev",
];

/// Memory.
const MEMORY: &[&str] = &[
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "mlockall", "munlock", "munlockall", "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect",
];

/// Signals, timers and clocks (reading them, not setting them).
const TIME_AND_SIGNALS: &[&str] = &[
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "sigaltstack", "sigreturn", "sigprocmask", "pause", "alarm", "nanosleep", "clock_nanosleep",
    "clock_nanosleep_time64", "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64",
    "gettimeofday", "time", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_settime",
    "timer_settime64", "timer_gettime", "timer_gettime64", "timer_getoverrun", "adjtimex", "clock_adjtime",
    "clock_adjtime64",
];

/// Sockets (but `socket` itself, checked on its family below) and System V /
/// POSIX IPC, which live in the pod's own IPC namespace.
const NETWORK_AND_IPC: &[&str] = &[
    "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "getsockopt",
    "setsockopt", "shutdown", "send", "sendto", "sendmsg", "sendmmsg", "recv", "recvfrom", "recvmsg",
    "recvmmsg", "recvmmsg_time64", "socketcall", "ipc", "shmget", "shmat", "shmdt", "shmctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink",
    "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64", "mq_notify",
    "mq_getsetattr",
];

/// The pod's capabilities include `CAP_SYS_CHROOT` (package managers
/// chroot into build roots).
const WITH_POD_CAPABILITIES: &[&str] = &["chroot"];

/// Namespace flags `clone` may not carry: `CLONE_NEWNS | CLONE_NEWCGROUP |
/// CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `AF_VSOCK`: talks to the hypervisor, never needed in a pod.
const AF_VSOCK: u64 = 40;

/// `personality` values programs use: Linux, `PER_LINUX32`,
/// `UNAME26`, both, and the query (0xffffffff).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Every syscall name the profile allows without conditions.
pub fn allowed() -> impl Iterator<Item = &'static str> {
    [FILES, POLLING, PROCESSES, MEMORY, TIME_AND_SIGNALS, NETWORK_AND_IPC, WITH_POD_CAPABILITIES]
        .into_iter()
        .flatten()
        .copied()
}

fn rule(names: &[&str], action: LinuxSeccompAction) -> Result<LinuxSyscallBuilder, oci_spec::OciSpecError> {
    Ok(LinuxSyscallBuilder::default().names(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).action(action))
}

/// The filter for a youki pod: refuse (`EPERM`) by default, allow the
/// lists above and the checked calls.
pub fn pod_profile() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut syscalls: Vec<LinuxSyscall> = vec![rule(&allowed().collect::<Vec<_>>(), allow)?.build()?];
    // clone without any namespace flag. libcontainer reads a masked
    // comparison as (arg & valueTwo) == value.
    syscalls.push(
        rule(&["clone"], allow)?
            .args(vec![LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(0u64)
                .value_two(CLONE_NAMESPACE_FLAGS)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()?])
            .build()?,
    );
    syscalls.push(
        rule(&["clone3"], LinuxSeccompAction::ScmpActErrno).map(|r| r.errno_ret(libc_enosys()))?.build()?,
    );
    syscalls.push(
        rule(&["socket"], allow)?
            .args(vec![LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(AF_VSOCK)
                .op(LinuxSeccompOperator::ScmpCmpNe)
                .build()?])
            .build()?,
    );
    for &persona in PERSONALITIES {
        syscalls.push(
            rule(&["personality"], allow)?
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(persona)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()?])
                .build()?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(1u32)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32, Arch::ScmpArchAarch64, Arch::ScmpArchArm])
        .syscalls(syscalls)
        .build()
}

fn libc_enosys() -> u32 {
    38
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_only_an_administrator_needs_is_not_allowed() {
        let allowed: Vec<_> = allowed().collect();
        for refused in [
            "unshare", "setns", "mount", "umount2", "fsopen", "fsmount", "move_mount", "open_tree", "mount_setattr",
            "pivot_root", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "init_module",
            "finit_module", "delete_module", "kexec_load", "reboot", "swapon", "settimeofday", "clock_settime",
            "userfaultfd", "open_by_handle_at", "lookup_dcookie", "quotactl", "syslog", "acct", "iopl", "ioperm",
            "sethostname", "setdomainname", "clone", "clone3", "socket", "personality", "fanotify_init",
            "pidfd_getfd", "kcmp",
        ] {
            assert!(!allowed.contains(&refused), "{refused} must not be allowed unconditionally");
        }
        let mut sorted = allowed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), allowed.len(), "a syscall is listed twice");
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let profile = pod_profile().unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        let syscalls = profile.syscalls().as_ref().unwrap();
        let clone = syscalls.iter().find(|s| s.names() == &["clone".to_owned()]).unwrap();
        let arg = &clone.args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!((arg.value(), arg.value_two()), (0, Some(CLONE_NAMESPACE_FLAGS)));
        // CLONE_NEWUSER (0x10000000) and CLONE_NEWNET (0x40000000) are in the mask; thread flags are not
        assert_ne!(CLONE_NAMESPACE_FLAGS & 0x1000_0000, 0);
        assert_ne!(CLONE_NAMESPACE_FLAGS & 0x4000_0000, 0);
        assert_eq!(CLONE_NAMESPACE_FLAGS & (0x100 | 0x200 | 0x400 | 0x800 | 0x10000), 0, "CLONE_VM|FS|FILES|SIGHAND|THREAD");
        let clone3 = syscalls.iter().find(|s| s.names() == &["clone3".to_owned()]).unwrap();
        assert_eq!((clone3.action(), clone3.errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
    }
}
