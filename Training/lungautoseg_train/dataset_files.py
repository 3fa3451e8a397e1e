"""The files ``export`` writes and training reads, named once."""

DATASET_NAME = "dataset.csv"          # one row per case: case, patient, image, label, fold, ignore
REPORT_NAME = "export_report.json"    # what was exported, with each structure's label value
