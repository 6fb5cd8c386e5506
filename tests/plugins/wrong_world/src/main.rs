//! A WASI command (it exports `wasi:cli/run`), not a Callout action: the host must reject it as
//! "does not implement callout:plugin/action".

fn main() {
    println!("i am a command, not an action");
}
