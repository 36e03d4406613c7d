"""`tracekit report`, `diff --format html` and nightly's index.html: self-contained HTML pages
of figures. `pages` (a trace) and `runs` (diff, nightly) gather each figure's numbers from the
same functions as the JSON reports; `lanes` prepares the engine timeline; `render` turns a page
into one HTML file that loads nothing from the network.
"""
