"""fsv analysis: fits, figures and the report, regenerated from a study's stored records.

    from analysis import analyze
    out = analyze("runs/quick")            # -> runs/quick/analysis/{fits.json, tables/, figures/, report.md}

or `python -m analysis runs/quick [--out OUT] [--allow-partial] [--seed S]`. Records that cannot be
trusted (mixed fsv versions, missing or failed cells) raise `TrustError` unless allow_partial; a null
a measure needs (model, regime, a scored record's accuracy, a few-shot k), a JSON column that does not
parse, or a file of another schema raise it always, naming the column and the file (`fsv analyze`
and `python -m analysis` exit 2). Measures are read per model instance (model, pretrain_seed,
checkpoint); the claim's verdict is a censoring-aware rank test (analysis.law).
"""

from analysis.load import TrustError, load_study
from analysis.pipeline import StudyMeasures, analyze, measure_study
from analysis.settings import AnalysisSettings

__all__ = ["AnalysisSettings", "StudyMeasures", "TrustError", "analyze", "load_study", "measure_study"]
