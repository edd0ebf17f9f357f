"""Reports: tables, figures, evidence and report.md from a sweep's run directories."""
