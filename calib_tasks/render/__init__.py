"""How calib-report, calib-study and calib-tune write what they show: one document model with
its Markdown and HTML forms (``document``, ``markdown``, ``html_page``), one way of writing
numbers and settings (``text``) and one figure style and save (``figures``); the public drawings
of a reliability diagram (``reliability``) and of risk-coverage curves (``risk_coverage``)."""
