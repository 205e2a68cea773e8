"""`flux-pipeline review`: a local web page for curating a catalog partition (keep / reject with a
reason, undo, filters, progress, a large view), recording each decision in the decisions log
(dataset.catalog.decisions). app.py serves it; guard.py refuses state changes from other origins and
hosts; partition_view.py reads what the page shows; page.html is the page (plain HTML and JS)."""
