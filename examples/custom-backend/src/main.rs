//! The MNIST example's command line, with this crate's `vec` device added:
//! `cargo run --release -p custom-backend -- --device vec --epochs 1`.

fn main() -> std::process::ExitCode {
    if let Err(e) = custom_backend::register() {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    mnist::main()
}
