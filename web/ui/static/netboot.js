/* Ingot web UI: the Network boot page (netboot.html). Builds on ui.js (window.Ingot).
 *
 * - Forms (edit or add a subnet, add a reservation, add a DNS record) and Remove/Delete buttons
 *   call the REST API (cookie + X-CSRF-Token); on success the page is reloaded so every section
 *   shows the new state, on failure the appliance's message is shown and the form keeps its input.
 * - The leases and boot events tables are redrawn every few seconds from GET /rest/dhcp/leases and
 *   GET /rest/boot-events (with the page's MAC filter), while the tab is visible.
 * Host names, MACs and event details come from the network: they only ever go into textContent.
 */
(function () {
  "use strict";

  var I = window.Ingot;
  if (!I) { return; }
  var LEASES = "/rest/dhcp/leases";
  var EVENTS = "/rest/boot-events";
  var OPTIONAL = ["rangeFirst", "rangeLast", "router", "domain", "ip", "hostname", "serverHardwareUri"];

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function code(text) {
    var cell = make("td");
    if (text) { cell.appendChild(make("code", "", text)); }
    return cell;
  }

  function timeCell(value) {
    var cell = make("td");
    if (value) {
      var time = make("time", "", value);
      time.setAttribute("datetime", value);
      cell.appendChild(time);
    }
    return cell;
  }

  function badgeCell(className, text) {
    var cell = make("td");
    cell.appendChild(make("span", "badge " + className, text));
    return cell;
  }

  /* A form's fields as an API body: blanks of optional fields are null, numbers are numbers. */
  function formBody(form) {
    var body = {};
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name) { return; }
      var value = String(field.value).trim();
      if (field.name === "dnsServers") {
        body.dnsServers = value.split(/[\s,]+/).filter(Boolean);
      } else if (field.type === "number") {
        body[field.name] = value === "" ? null : Number(value);
      } else if (OPTIONAL.indexOf(field.name) >= 0) {
        body[field.name] = value === "" ? null : value;
      } else {
        body[field.name] = value;
      }
    });
    return body;
  }

  function send(button, method, path, body) {
    I.busy(button, true);
    I.api(method, path, body).then(function () {
      window.location.reload();
    }, function (err) {
      I.busy(button, false);
      I.showError(err.message);
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var submit = form.querySelector('button[type="submit"]');
    if (form.hasAttribute("data-subnet-form")) {
      event.preventDefault();
      var uri = form.getAttribute("data-subnet-uri");
      send(submit, uri ? "PUT" : "POST", uri || "/rest/dhcp/subnets", formBody(form));
    } else if (form.hasAttribute("data-add-reservation")) {
      event.preventDefault();
      var reservation = formBody(form);
      if (reservation.serverHardwareUri === null) { delete reservation.serverHardwareUri; }
      send(submit, "POST", "/rest/dhcp/reservations", reservation);
    } else if (form.hasAttribute("data-add-dns")) {
      event.preventDefault();
      var record = formBody(form);
      if (record.ttl === null) { delete record.ttl; }
      send(submit, "POST", "/rest/dns/records", record);
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var button = target && target.closest("[data-delete]");
    if (!button) { return; }
    var question = button.getAttribute("data-question");
    if (question && !window.confirm(question)) { return; }
    send(button, "DELETE", button.getAttribute("data-delete"));
  });

  /* --- live tables ------------------------------------------------------------------------------ */
  function leaseRow(lease) {
    var state = lease.active ? "active" : (lease.state === "bound" ? "expired" : lease.state);
    var row = make("tr");
    row.appendChild(code(lease.ip));
    row.appendChild(code(lease.mac));
    row.appendChild(make("td", "", lease.hostname || ""));
    row.appendChild(badgeCell("lease-" + I.slug(state || ""), state));
    row.appendChild(timeCell(lease.expires));
    return row;
  }

  function eventRow(item) {
    var row = make("tr");
    row.setAttribute("data-event", String(item.id));
    row.appendChild(timeCell(item.at));
    row.appendChild(make("td", "", item.service));
    row.appendChild(make("td", "", item.action));
    row.appendChild(code(item.mac));
    row.appendChild(make("td", "", item.clientIp || ""));
    row.appendChild(badgeCell(item.ok ? "result-success" : "result-failure", item.ok ? "ok" : "failed"));
    row.appendChild(make("td", "detail", item.detail || ""));
    return row;
  }

  function redraw(table, members, render, empty) {
    var body = table.tBodies[0];
    var rows = members.map(render);
    while (body.firstChild) { body.removeChild(body.firstChild); }
    rows.forEach(function (row) { body.appendChild(row); });
    I.localTimes(body);
    if (empty) { empty.hidden = rows.length > 0; }
  }

  function query(params) {
    return Object.keys(params).map(function (key) {
      return encodeURIComponent(key) + "=" + encodeURIComponent(params[key]);
    }).join("&");
  }

  function refresh() {
    var leases = document.querySelector("[data-leases]");
    var events = document.querySelector("[data-events]");
    var jobs = [];
    if (leases) {
      jobs.push(I.api("GET", LEASES + "?" + query({ count: leases.getAttribute("data-count") || 50 }))
        .then(function (page) {
          redraw(leases, page.members || [], leaseRow, document.querySelector("[data-leases-empty]"));
          var total = document.querySelector("[data-lease-total]");
          if (total) { total.textContent = String(page.total); }
        }));
    }
    if (events) {
      var params = { count: events.getAttribute("data-count") || 50 };
      var mac = events.getAttribute("data-mac");
      if (mac) { params.filter = "mac matches '%" + mac.replace(/'/g, "''") + "%'"; }
      jobs.push(I.api("GET", EVENTS + "?" + query(params)).then(function (page) {
        redraw(events, page.members || [], eventRow, document.querySelector("[data-events-empty]"));
      }));
    }
    return Promise.all(jobs);
  }

  function schedule() {
    var table = document.querySelector("[data-leases]");
    var seconds = Number(table && table.getAttribute("data-refresh-s")) || 5;
    window.setTimeout(function () {
      if (document.hidden) { schedule(); return; }
      refresh().then(schedule, schedule);  // a failed poll (appliance restarting) is simply retried
    }, seconds * 1000);
  }

  if (document.querySelector("[data-leases], [data-events]")) { schedule(); }
}());
