"""nsbi-workbench dashboard: `streamlit run app.py` (or `nsbi up`).

Only the access guard and the navigation live here; each page is one module in
dashboard/pages/ that calls one named function.
"""

import streamlit as st

from dashboard import warmup
from dashboard.auth import guard
from dashboard.icon import favicon

# the icon is an image served by the dashboard: nothing is fetched from outside the machine
st.set_page_config(page_title="nsbi-workbench", page_icon=favicon(), layout="wide")
guard()
warmup.start()  # builds one figure of each kind in the background (plotly's lazy imports)

PAGES = [
    st.Page(
        "dashboard/pages/campaigns.py",
        title="Campaigns",
        icon=":material/rocket_launch:",
        default=True,
    ),
    st.Page("dashboard/pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
    st.Page("dashboard/pages/diagnostics.py", title="Diagnostics", icon=":material/fact_check:"),
    st.Page("dashboard/pages/fit.py", title="Fit", icon=":material/function:"),
    st.Page("dashboard/pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("dashboard/pages/costs.py", title="Usage and cost", icon=":material/payments:"),
]

st.navigation(PAGES).run()
