//! The link to libtorch works in tests too: autograd and an optimizer fit a line.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[test]
fn linear_regression_converges_with_autograd() {
    tch::manual_seed(0);
    let xs = Tensor::linspace(-1.0, 1.0, 64, (Kind::Float, Device::Cpu)).unsqueeze(1);
    let ys = &xs * 3.0 + 2.0;
    let store = nn::VarStore::new(Device::Cpu);
    let line = nn::linear(store.root(), 1, 1, Default::default());
    let mut optimizer = nn::Sgd::default().build(&store, 0.1).unwrap();
    let loss_at = |line: &nn::Linear| {
        line.forward(&xs)
            .mse_loss(&ys, tch::Reduction::Mean)
            .double_value(&[])
    };
    let initial = loss_at(&line);
    for _ in 0..500 {
        let loss = line.forward(&xs).mse_loss(&ys, tch::Reduction::Mean);
        optimizer.backward_step(&loss);
    }
    let weight = line.ws.double_value(&[0, 0]);
    let bias = line.bs.as_ref().unwrap().double_value(&[0]);
    assert!(initial > 1.0, "the random start is far from the line: {initial}");
    assert!(
        (weight - 3.0).abs() < 1e-3 && (bias - 2.0).abs() < 1e-3,
        "w={weight} b={bias}"
    );
}
