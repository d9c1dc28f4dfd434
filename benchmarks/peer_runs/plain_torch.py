"""A plain PyTorch script, as a tutorial writes it: simple-2conv, DataLoader, Adam 1e-3, NCHW float tensors.

Run by benchmarks.peers with cnnarena's venv (it uses only torch and numpy).
`python plain_torch.py DATA.npz --epochs 10 --batch-size 128`
"""


import numpy as np
import torch
from protocol import Stopwatch, array_script_args, emit
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def simple_2conv() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def main() -> None:
    a = array_script_args()
    torch.manual_seed(0)
    d = np.load(a.npz)
    x = torch.from_numpy(d["x_train"]).float().div(255).unsqueeze(1)
    y = torch.from_numpy(d["y_train"]).long()
    xt = torch.from_numpy(d["x_test"]).float().div(255).unsqueeze(1)
    yt = torch.from_numpy(d["y_test"]).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=a.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(xt, yt), batch_size=1000)
    model = simple_2conv()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, a.epochs + 1):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        with Stopwatch() as s:
            model.eval()
            correct = 0
            with torch.no_grad():
                for xb, yb in test_loader:
                    correct += (model(xb).argmax(1) == yb).sum().item()
        emit(epoch, correct / len(yt), s.seconds)
    torch.save(model.state_dict(), "model.pt")


if __name__ == "__main__":
    main()
