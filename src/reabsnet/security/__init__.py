"""The adaptive security evaluation: the suite as data (`suite`), the engine that runs it with one per-image ledger
per bound (`engine`, `ledger`), the networks it differentiates (`networks`), the detection thresholds
(`thresholds`), the sanity checks and the binarization test, typed results and the report's section; `api` is the
public entry point (`evaluate_adaptive`) and `reproduce`'s adaptive stage (`evaluate_profile`)."""
