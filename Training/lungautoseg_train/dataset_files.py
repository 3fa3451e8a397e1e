"""The files ``export`` writes and training reads, named once."""

DATASET_NAME = "dataset.csv"          # one row per case: case, patient, image, label, fold, ignore, labelled
REPORT_NAME = "export_report.json"    # what was exported, with each structure's label value
# The ``labelled`` column lists the structures a case's label map holds, with this between them;
# a structure the case lacks is unlabelled there (not background). No column: all are labelled.
LABELLED_SEPARATOR = " "
