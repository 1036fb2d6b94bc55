"""The weight products of one decode step of the Qwen2.5-0.5B shape on this CPU, three ways.

What the decoder does today (`W·xᵀ` for large weights, `linear` for small ones:
plugins/decoder-policy/src/qwen2.rs `project_weight`) against oneDNN with each weight packed
once (`mkldnn._reorder_linear_weight`, then `mkldnn._linear_pointwise`), at 16 live rows and at
5 (a rollout batch after most rows finished). fp32, random weights, libtorch's threads as set.

    "$(readlink -f .torch)/../../../../bin/python" bench/decode_products.py [--threads 2]
"""

import argparse
import time

import torch

LARGE_WEIGHT = 1 << 18  # qwen2.rs: weights of at least this many elements take W·xᵀ


def projection_shapes(layers=24, hidden=896, kv=128, intermediate=4864, vocab=151_936):
    layer = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),
             (intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]
    return layer * layers + [(vocab, hidden)]


def timed(run, repeats):
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weights = [torch.randn(*shape) * 0.02 for shape in projection_shapes()]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, 16) if w.numel() >= LARGE_WEIGHT else None
              for w in weights]

    def as_decoder(inputs):
        return [w.matmul(inputs[w.shape[1]].t()).t() if w.numel() >= LARGE_WEIGHT
                else torch.nn.functional.linear(inputs[w.shape[1]], w) for w in weights]

    def prepacked(inputs):
        return [torch.ops.mkldnn._linear_pointwise(inputs[w.shape[1]], p, None, "none", [], "")
                if p is not None else torch.nn.functional.linear(inputs[w.shape[1]], w)
                for w, p in zip(weights, packed)]

    print(f"{'rows':>4} {'as the decoder ms':>18} {'oneDNN prepacked ms':>20} {'max |diff|':>11}")
    for rows in (16, 5):
        inputs = {n: torch.randn(rows, n) for n in (896, 4864)}
        difference = max((a - b).abs().max().item()
                         for a, b in zip(as_decoder(inputs), prepacked(inputs)))
        print(f"{rows:>4} {timed(lambda: as_decoder(inputs), args.repeats):>18.1f} "
              f"{timed(lambda: prepacked(inputs), args.repeats):>20.1f} {difference:>11.2e}")


if __name__ == "__main__":
    main()
