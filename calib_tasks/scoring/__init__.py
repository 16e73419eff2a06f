"""How a task's records are scored: the record schema (``records``), the confidence rules
(``confidence_rules``), the cross-fitted recalibrators (``recalibrators``), a task's settings
(``settings``) and the metric table built from them (``metric_table``)."""
