"""fsv analysis: fits, figures and the report, regenerated from a study's stored records.

    from analysis import analyze
    out = analyze("runs/quick")            # -> runs/quick/analysis/{fits.json, tables/, figures/, report.md}

or `python -m analysis runs/quick [--out OUT] [--allow-partial] [--seed S]`. Records that cannot be
trusted (mixed fsv versions, missing or failed cells) raise `TrustError` unless allow_partial.
"""

from analysis.load import TrustError, load_study
from analysis.pipeline import StudyMeasures, analyze, measure_study
from analysis.settings import AnalysisSettings

__all__ = ["AnalysisSettings", "StudyMeasures", "TrustError", "analyze", "load_study", "measure_study"]
