-- Whether the ops state of this source was moved here already.
SELECT row_counts FROM ops.state_moves WHERE source = %(source)s
