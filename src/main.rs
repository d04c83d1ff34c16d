//! `station`: parse arguments, run, map the result to an exit code.

fn main() -> std::process::ExitCode {
    provisioning_station::gui::LAUNCHED.get_or_init(std::time::Instant::now);
    provisioning_station::cli::main()
}
