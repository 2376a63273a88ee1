"""edgewatch models: compact 1D-CNNs for anomaly scoring and remaining useful life.

What the agent calls (all from one worker thread; nothing here prints)::

    from models.bundle import load_bundle, Bundle          # BundleError if unverifiable
    from models.bundles import default_bundle_path         # shipped: "pump", "cmapss-fd001"
    from models.predictor import Predictor, Predictions
    from models.commission import commission, AssetBaseline
    from models.scoring import Hysteresis, ThresholdRule

    bundle = load_bundle(default_bundle_path("pump"))
    predictor = Predictor(bundle, threads=1)
    baseline = commission(samples, bundle, sensors=names, asset="pump-001")  # (time, sensors) raw
    baseline.save(dir); baseline = AssetBaseline.load(dir)
    out = predictor.predict(windows, [baseline_or_None, ...])  # windows: (B, S, W) raw float32
    alarm = Hysteresis(out.threshold[i], baseline.rule).update(out.anomaly_score[i])

Modules: :mod:`network` (nn.Modules), :mod:`preprocessing` (scaler, windows, C-MAPSS),
:mod:`train` (loops), :mod:`evaluate` (protocols), :mod:`metrics`, :mod:`scoring`
(threshold rule, hysteresis), :mod:`bundle`, :mod:`predictor`, :mod:`commission`,
:mod:`datasets` (labelled CSV / simulator tables), :mod:`pipelines` (data -> bundle),
:mod:`bench`, :mod:`retrain_shipped` (``python -m models.retrain_shipped``).
"""
