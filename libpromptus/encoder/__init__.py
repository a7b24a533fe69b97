"""Frames in, units out: prompt inversion (`encoder.Encoder`), its losses and rate control, the encode job."""
