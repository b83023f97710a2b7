//! Allocator settings and memory limits for inference processes.
//!
//! libtorch allocates and frees large activation buffers on every forward pass. With glibc's
//! defaults those come from fresh `mmap`s each time and are trimmed right after, so every
//! pass pays page faults again. Raising the mmap threshold to 64 MiB and the trim threshold
//! to 1 GiB keeps the buffers in the heap between passes (measured: batch of 32 MiniLM
//! texts 64–69 ms → 53–58 ms on 2 cores; see the README's performance section).

/// Applies the settings once, at process start-up, before the model loads. Does nothing on
/// platforms other than glibc Linux. Returns whether the settings took.
#[allow(unsafe_code)]
pub fn tune_for_inference() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time,
        // and these values are within glibc's documented ranges.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Caps this process's address space at `bytes` (`RLIMIT_AS`): allocations past it fail
/// instead of growing the machine's memory use. For processes that load untrusted models
/// (a build's smoke test). Returns whether the limit took (Linux only).
#[allow(unsafe_code)]
pub fn limit_address_space(bytes: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        let limit = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: bytes as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass and changes only this process's limit.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        false
    }
}
