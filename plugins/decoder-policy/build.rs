fn main() {
    crpo_torch_link::link_libtorch();
}
