"""The leaderboard: result records in, a static web site and markdown tables out.

`data` aggregates records into the site's tables (seeds pooled, statuses kept, CAB's z-scored
aggregate with frozen constants) and efficiency curves with their efficiency lengths; `site` writes
the static site (`cab leaderboard build`) from the pages of `cab.leaderboard_site` and serves it
(`cab leaderboard serve`); `markdown` holds the one markdown table writer, used by both `cab
leaderboard table` (the overview, here) and `cab bench table`; `cli` is the `cab leaderboard`
command. Nothing here imports torch.
"""
