//! The `mnist` binary; the program itself is the library's [`mnist::main`].

fn main() -> std::process::ExitCode {
    mnist::main()
}
