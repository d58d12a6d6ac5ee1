//! The agent benchmark (see `agent/linux.rs`): Linux only, as it reads /proc and drives a
//! private Secret Service. Reproduce with `cargo build --release && cargo bench --bench agent`.

#[cfg(target_os = "linux")]
#[path = "agent/linux.rs"]
mod linux;

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    {
        linux::main()
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("the agent benchmark runs on Linux only");
        std::process::ExitCode::SUCCESS
    }
}
