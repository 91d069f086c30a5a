// Prelude of matvec.wgsl: the product leaves no state behind.

fn remember_input(first_group: bool, thread: u32) {}
