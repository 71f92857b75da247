"""The marketing report and the weekly Slack digest (README, "Customers, lifecycle and reports").

Renderers over one typed input, :class:`ReportData`; :mod:`triage.report.publish` fills it from the
store for ``triage report``, ``triage digest`` and the weekly-digest deployment. The renderers::

    from triage.report import build_report_data, write_report, build_digest, write_digest_preview

    data = build_report_data(mentions, profiles, lifecycles, outcomes, backlog, since=s, now=now)
    result = write_report(data, Path("report"))          # report/index.html + PNGs + CSVs
    digest = build_digest(data, result.charts)
    write_digest_preview(digest, outbox / "marketing-channel", channel="#marketing",
                         key=f"digest-{now:%Y-%m-%d}")    # --dry-run / no token
    # or: upload digest.files, then chat_postMessage(text=digest.text,
    #                                                 blocks=digest.with_file_ids(ids))

See :mod:`triage.report.data`, :mod:`triage.report.charts`, :mod:`triage.report.html` and
:mod:`triage.report.digest`.
"""

from triage.report.charts import Chart, write_charts
from triage.report.data import (
    Advocate,
    AtRiskCustomer,
    BacklogItem,
    FeatureGroup,
    Quote,
    ReportData,
    VolumeRow,
    advocates,
    at_risk,
    build_report_data,
    feature_groups,
    volume_by_day,
)
from triage.report.digest import (
    DIGEST_CHARTS,
    Digest,
    DigestFile,
    build_digest,
    check_blocks,
    write_digest_preview,
)
from triage.report.html import ReportResult, render_html, write_report

__all__ = [
    "DIGEST_CHARTS",
    "Advocate",
    "AtRiskCustomer",
    "BacklogItem",
    "Chart",
    "Digest",
    "DigestFile",
    "FeatureGroup",
    "Quote",
    "ReportData",
    "ReportResult",
    "VolumeRow",
    "advocates",
    "at_risk",
    "build_digest",
    "build_report_data",
    "check_blocks",
    "feature_groups",
    "render_html",
    "volume_by_day",
    "write_charts",
    "write_digest_preview",
    "write_report",
]
