//! The gateway benchmark (see `gateway/linux.rs`): Linux only, as it reads /proc and
//! drives Debian's nginx. Reproduce with `cargo bench --bench gateway`.

#[cfg(target_os = "linux")]
#[path = "gateway/linux.rs"]
mod linux;

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    {
        linux::main()
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("the gateway benchmark runs on Linux only");
        std::process::ExitCode::SUCCESS
    }
}
