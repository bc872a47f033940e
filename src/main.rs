fn main() -> std::process::ExitCode {
    coder_workspace_mcp::cli::main()
}
