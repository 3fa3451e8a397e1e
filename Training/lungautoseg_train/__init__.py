"""LungAutoSeg training package: export DICOM to training data (train, evaluate, package to come)."""
