#![deny(unsafe_code)]
#[allow(unsafe_code)]
mod sys;
fn main() {
    let nm = sys::libnm::Nm::connect();
    println!("{}", nm.is_ok());
}
