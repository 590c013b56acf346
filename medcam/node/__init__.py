"""medcam as a DICOM node: images arrive from a modality or an archive, results go back.

The node is the pipeline of :mod:`medcam.scoring` between two network ends, with a durable
spool in the middle so that a crash or ``kill -9`` loses nothing and repeats nothing the
archive can see:

- :mod:`~medcam.node.scp`: the C-ECHO / C-STORE service class provider (pynetdicom); each
  instance is written to the spool (``fsync``, atomic rename) *before* its success response;
- :mod:`~medcam.node.spool`: the spool's folders and the only code that names files in it
  (from validated UIDs, never from other tag values);
- :mod:`~medcam.node.service`: the worker that scores a series once it has been quiet for
  the settle time, with the same pipeline and results file as ``medcam score``, and queues
  its DICOM results in the outbox;
- :mod:`~medcam.node.send`: the outbox, emptied by C-STORE or STOW-RS with retries; a result
  leaves it only after the destination's success (its deterministic UIDs make a repeated
  send harmless);
- :mod:`~medcam.node.dicomweb`: QIDO-RS / WADO-RS / STOW-RS for ``medcam score dicomweb:URL``.
"""
