"""Features stage: the dbt project over each batch's DuckDB file, as partitioned assets."""
