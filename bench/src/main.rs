//! `pxe-bench`: the rack-boot simulator. The benchmark issues fill it in; for now it only says so.

fn main() {
    eprintln!("pxe-bench: the rack-boot simulator is not built yet (see the simulator issue)");
    std::process::exit(2);
}
