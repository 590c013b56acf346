"""The command front ends: each maps a command's options onto the one pipeline (:mod:`medcam.scoring`)."""
