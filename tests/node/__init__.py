"""Tests of medcam as a DICOM node, against a real PACS (see :mod:`tests.node.pacs`)."""
