"""The ReabsNet defense and its evaluation on your own classifier and data: here a small ResNet on a synthetic
3x32x32, 10-class set (replace the two marked lines with your model and images).

    python examples/own_model.py            # 75 s on the 2-core Intel CPU (docs/hardware.md)

Trains the classifier, fits a guardian to it (DeepFool on the classifier, then natural vs adversarial), wraps both
in ReabsNet, and evaluates them: attacks crafted on the classifier alone (the paper's Tables 1-2) and the adaptive
suite at L-inf 8/255, whose section of the report it prints.
"""

import torch

import reabsnet
from reabsnet.models import create_model
from reabsnet.profiles import AdamTrainConfig
from reabsnet.train.loop import accuracy, cross_entropy_at, fit

torch.manual_seed(0)
# your data: float images (N, C, H, W) in a box (here [-0.5, 0.5]) and integer labels
x_train, y_train = reabsnet.synthetic(2400, seed=1)
x_test, y_test = reabsnet.synthetic(300, seed=2)

# your classifier: any nn.Module returning (N, classes) logits; here trained in a few seconds
master = create_model("resnet-small", in_channels=3, num_classes=10)
fit(master, (x_train, y_train), (x_test, y_test), AdamTrainConfig(epochs=4, batch_size=64, lr=2e-3),
    loss_fn=cross_entropy_at(1.0), generator=torch.Generator().manual_seed(0), desc="classifier")
master.eval()
print(f"classifier: clean accuracy {accuracy(master, x_test, y_test):.3f}")

# the guardian, trained on the classifier's DeepFool examples (give out=DIR to keep them for a rerun)
guardian, record = reabsnet.fit_guardian(master, x_train, y_train=y_train, box=(-0.5, 0.5))
print(f"guardian: validation accuracy {record['metrics']['val_accuracy']:.3f} "
      f"({record['train_set']['kept']} DeepFool pairs)")

defense = reabsnet.ReabsNet(master, guardian, box=(-0.5, 0.5)).eval()
print(f"ReabsNet: clean accuracy {(defense.predict_batches(x_test).label == y_test).float().mean():.3f}")

# the paper's threat model: attacks crafted on the classifier alone, then seen by ReabsNet
oblivious = reabsnet.evaluate_oblivious(defense, x_test[:100], y_test[:100], attacks=["fgsm", "deepfool"],
                                        settings={"fgsm": {"eps": 8 / 255}})
for row in oblivious["attacks"].values():
    print(f"{row['title']}: detected {row['detection']['rate']:.3f}, classifier alone "
          f"{row['master_only']['rate']:.3f}, ReabsNet {row['reabsnet']['rate']:.3f}")

# an attacker who knows the guardian and the modifier too: the adaptive suite, worst case per image
# (natural images apart from the evaluated ones calibrate the guardian's threshold at 1% and 5% false positives)
x_natural, _ = reabsnet.synthetic(500, seed=3)
result = reabsnet.evaluate_adaptive(master, guardian, x_test[:50], y_test[:50], norm="linf", bounds=[8 / 255],
                                    budget="quick", box=(-0.5, 0.5), x_calibration=x_natural)
print(f"adaptive, worst case: ReabsNet {result.robust_accuracy()}")
print(result.markdown())
