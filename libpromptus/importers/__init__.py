"""Importers that turn prompt data made by other tools into `.pmt` streams."""
