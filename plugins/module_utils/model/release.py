"""The version of vmsan network (``vmsan --version``): the collection's, as
galaxy.yml and the newest CHANGELOG.md section give it
(tests/unit/test_release.py keeps the three equal)."""

VERSION = "2.0.0"
