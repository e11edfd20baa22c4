fn main() -> std::process::ExitCode {
    emporium::cli::main()
}
