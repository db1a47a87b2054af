"""finsent's own financial sentences: what an export checks parity on when no data is recorded or given.

A model folder that records no data (the embedded base model, a model from elsewhere) still gets its GGUF
compared with the source model, on these. Written for finsent, not taken from any corpus: news-style
sentences of every sentiment, in the PhraseBank's tokenised style (spaces before punctuation) and in plain
prose, with figures, currencies, percentages, company names and headlines, so that the prompt, the
tokenizer's digits and punctuation and the label decision are all exercised.
"""

from __future__ import annotations

PARITY_SENTENCES: tuple[str, ...] = (
    # positive
    "Quarterly operating profit climbed to EUR 42.5 mn from EUR 31.0 mn a year earlier .",
    "Net sales increased by 18 % to USD 1.2 billion , driven by strong demand in Asia .",
    "The board raised its full-year earnings guidance after a record third quarter .",
    "Orderbook at the end of the period stood at SEK 3.4 bn , up 27 % year-on-year .",
    "The company won a five-year maintenance contract worth about EUR 60 million .",
    "Shares jumped 9% in early trading after the lender beat analysts' estimates.",
    "Gross margin improved to 41.3 percent from 38.9 percent in the previous quarter .",
    "The merger is expected to generate annual cost savings of EUR 25 mn from 2027 onwards .",
    "Cash flow from operations more than doubled to GBP 310 million.",
    "Profit before taxes rose to EUR 7.8 mn , compared with a loss of EUR 1.1 mn .",
    "The retailer's like-for-like sales grew for the eleventh consecutive month .",
    "Credit rating agency upgrades the utility to A- on lower leverage",
    "Dividend proposal lifted to EUR 0.65 per share , an increase of 30 % .",
    "Demand for the new paper grade has exceeded our expectations, the CEO said.",
    "Operating margin widened to 12.4 % as restructuring savings took effect .",
    # negative
    "Operating loss widened to EUR 14.2 mn from a loss of EUR 6.5 mn a year ago .",
    "The group will cut about 450 jobs as sales fell 22 % in the first half .",
    "Net profit dropped to USD 3.1 million from USD 9.7 million.",
    "The company issued a profit warning , citing weak demand and higher raw material costs .",
    "Shares slumped 14% after the miner suspended its dividend.",
    "Comparable net sales decreased by 8.5 % to EUR 210 mn .",
    "The bank booked impairment charges of SEK 1.9 bn on its shipping loans .",
    "Order intake declined to EUR 98 mn , down from EUR 131 mn in the corresponding period .",
    "Regulator fines the insurer EUR 12 million over mis-sold policies",
    "Production was halted at the plant for three weeks because of a fire .",
    "The airline swung to a pre-tax loss of GBP 45 mn on higher fuel prices .",
    "Earnings per share fell to EUR 0.04 from EUR 0.19 .",
    "The company expects its 2026 operating profit to be clearly below last year's level .",
    "Credit losses rose sharply , eroding the lender's quarterly result .",
    "Shipments of mobile components fell 30 percent, the weakest quarter in a decade.",
    # neutral
    "The company will publish its interim report on 24 October 2026 .",
    "The annual general meeting will be held in Helsinki on 3 April .",
    "The share capital of the company is EUR 56.4 mn and it has 120 million shares .",
    "The contract covers the delivery of two paper machines to a mill in Brazil .",
    "The deal is subject to approval by the competition authorities .",
    "The company operates 48 stores in Finland , Sweden and the Baltic countries .",
    "Its headquarters are located in Espoo and it employs about 2,300 people .",
    "The new factory will produce packaging board for the European market .",
    "Financial details of the agreement were not disclosed .",
    "The CFO will present the results in a webcast at 10:00 a.m. EET.",
    "The company's shares are listed on the Nasdaq Helsinki exchange .",
    "The group reports its results in three business segments .",
    "The transaction is expected to close in the second quarter of 2027 .",
    "According to the company , the unit manufactures steel components for cranes .",
    "Trading volume was 1.4 million shares on Tuesday.",
)
