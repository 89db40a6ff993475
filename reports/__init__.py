"""Report statistics: per-arm sufficient statistics in, report values and renderings out."""

from reports.abtest import Report, build_report
from reports.inputs import ArmSummary, DailyArmSummary, ReportInput
from reports.render import report_to_csv, report_to_dict
from reports.stats import MeanStats, SubjectSums

__all__ = [
    "ArmSummary",
    "DailyArmSummary",
    "MeanStats",
    "Report",
    "ReportInput",
    "SubjectSums",
    "build_report",
    "report_to_csv",
    "report_to_dict",
]
