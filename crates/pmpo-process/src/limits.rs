//! The memory limit of pmpo's own child processes (a tool or a check run in
//! a child so that it can be killed): a size read from the environment, and
//! the child's argument for it, and the child's side that caps its own
//! address space (`RLIMIT_AS`).

/// The variable that sets the limit: bytes, or with a suffix `K`, `M`, `G`
/// (powers of 1024); `0` or `off` for none.
pub const MEMORY_VAR: &str = "PMPO_TOOL_MEMORY_LIMIT";
/// The default limit (address space) of such a child.
pub const DEFAULT_MEMORY_LIMIT: u64 = 4 << 30;
/// `off` runs tools and checks in pmpo's own process (not interruptible).
pub const ISOLATION_VAR: &str = "PMPO_TOOL_ISOLATION";

/// Whether [`ISOLATION_VAR`] turns child processes off.
pub fn isolation_off() -> bool {
    std::env::var(ISOLATION_VAR).is_ok_and(|v| v.trim().eq_ignore_ascii_case("off"))
}

/// The limit from [`MEMORY_VAR`] (`Ok(None)`: no limit); an error says what
/// is wrong with the value.
pub fn memory_limit() -> Result<Option<u64>, String> {
    match std::env::var(MEMORY_VAR) {
        Err(_) => Ok(Some(DEFAULT_MEMORY_LIMIT)),
        Ok(v) => parse_size(&v).map(|n| (n > 0).then_some(n)),
    }
}

/// `4G`, `512M`, `64K`, `1000` (bytes), `off` (0).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("`{text}`: the unit must be K, M or G")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{text}` is not a size (e.g. 4G, 512M, 0 for no limit)"))
}

/// A size for people: `4 GiB`, `512 MiB`, or bytes.
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Whether a child's stderr says it died of a failed allocation (Rust's
/// "memory allocation of N bytes failed", or an allocator's out-of-memory).
pub fn died_of_memory(stderr: &str) -> bool {
    stderr.contains("memory allocation of") || stderr.contains("out of memory")
}

/// The argument that passes the limit to pmpo's own child (`pmpo __tool`).
const LIMIT_ARG: &str = "--memory-limit=";

/// The argv of one of pmpo's own children: `exe SUBCOMMAND [--memory-limit=N]`.
/// The child sets the limit on itself first thing ([`apply_limit_from_args`]):
/// a `pre_exec` hook would do the same, but costs a full `fork` of pmpo (the
/// runner spawns with `posix_spawn` otherwise), several milliseconds a call.
pub fn child_argv(exe: &std::path::Path, subcommand: &str, limit: Option<u64>) -> Vec<String> {
    let mut argv = vec![exe.to_string_lossy().into_owned(), subcommand.to_string()];
    if let Some(bytes) = limit {
        argv.push(format!("{LIMIT_ARG}{bytes}"));
    }
    argv
}

/// In the child: sets the address-space limit its argv asks for (before any
/// work). An error when the limit is asked for but cannot be set: the child
/// must not run without it.
pub fn apply_limit_from_args() -> Result<(), String> {
    for arg in std::env::args().skip(2) {
        if let Some(n) = arg.strip_prefix(LIMIT_ARG) {
            let bytes: u64 = n
                .parse()
                .map_err(|_| format!("`{arg}`: not a number of bytes"))?;
            let lim = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            // SAFETY: setrlimit(2) reads the struct we own.
            if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } != 0 {
                return Err(format!(
                    "cannot set the memory limit: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size(" 1000 "), Ok(1000));
        assert_eq!(parse_size("off"), Ok(0));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(human_size(4 << 30), "4 GiB");
        assert_eq!(human_size(512 << 20), "512 MiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
