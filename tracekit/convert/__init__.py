"""Importers and exporters between trace bundles and other tools' formats."""
