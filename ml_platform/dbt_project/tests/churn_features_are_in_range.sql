-- The derived churn features stay in their domains (other data sets have no such columns).
{% if var('dataset') == 'churn' %}
select *
from {{ ref('features') }}
where tenure_bucket not in ('00-05m', '06-11m', '12-23m', '24-47m', '48m+')
   or is_month_to_month not in (0, 1)
   or has_fiber not in (0, 1)
   or charges_per_product < 0
   or total_charges is null
{% else %}
select 1 as no_rows where false
{% endif %}
