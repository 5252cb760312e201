"""Tests against govmomi's vSphere API simulator (vcsim) through pyvmomi: fixtures in conftest.py."""
