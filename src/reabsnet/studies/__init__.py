"""Studies built on the paper evaluation and the adaptive suite: the Table 2 ablation and the hardening experiment."""
