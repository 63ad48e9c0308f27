-- A row without a label cannot be trained on or scored.
select *
from {{ ref('features') }}
where {{ adapter.quote(var('target_column')) }} is null
