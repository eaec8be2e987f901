"""The examples of the documentation pages in ``PAGE_GROUPS["guides"]`` run as written (see ``docs_pages.py``)."""

import pytest
from docs_pages import PAGE_GROUPS, run_page


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGE_GROUPS["guides"])
def test_page_runs_as_written(name, tmp_path):
    run_page(name, tmp_path)
