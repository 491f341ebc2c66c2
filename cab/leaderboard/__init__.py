"""The leaderboard: result records in, a static web site and markdown tables out.

`data` aggregates records into the site's tables (seeds pooled, statuses kept, CAB's z-scored
aggregate with frozen constants, each column's reference gate) and efficiency curves with their
efficiency lengths; `mechanisms` gives each attention its page (what it is, from the registry; how it
did, from the tables) and feeds the compare view; `zoology` is MQAR accuracy against recurrent state
size; `downloads` writes the full data set (records as JSON Lines, runs and efficiency points as CSV);
`site` writes the static site (`cab leaderboard build`) from the pages of `cab.leaderboard_site` and
serves it (`cab leaderboard serve`); `markdown` holds the one markdown table writer, used by both `cab
leaderboard table` (the overview, here) and `cab bench table`; `cli` is the `cab leaderboard` command.
Only `mechanisms` imports torch, through the attention registry, and only while a site is built.
"""
