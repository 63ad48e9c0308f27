-- Each entity appears once per batch: a duplicate would leak between train and test splits.
select {{ adapter.quote(var('id_column')) }}, count(*) as occurrences
from {{ ref('features') }}
group by 1
having count(*) > 1
