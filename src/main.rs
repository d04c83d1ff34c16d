//! `station`: parse arguments, run, map the result to an exit code.

fn main() -> std::process::ExitCode {
    provisioning_station::cli::main()
}
